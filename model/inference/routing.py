"""Route stage logic: which report gets a draft, and which route (adapter + prompt) drafts it.

Input: a ``ReportEvent``. Output: ``RouteSpec`` (name, adapter, prompt template, request topic), or ``Skip`` when the
report is not ours to draft. Failure modes: a malformed routing table raises ``ValueError`` at load time (start-up),
never per event. The table is data (``model/inference/routes.toml`` or a site file): the first row matching modality,
body system, site, language wins, else ``default``. Details: model/README.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from schemas import ReportEvent, ReportStatus, RouteSpec, Skip
from schemas.topics import draft_requests

DEFAULT_TABLE = Path(__file__).parent / "routes.toml"
DRAFTABLE = {ReportStatus.PRELIMINARY, ReportStatus.IN_PROGRESS, ReportStatus.REGISTERED}


@dataclass(frozen=True)
class RouteRow:
    name: str
    adapter: str
    prompt: str
    modality: frozenset[str] = frozenset()
    body_system: frozenset[str] = frozenset()
    site: frozenset[str] = frozenset()
    language: frozenset[str] = frozenset()

    def matches(self, event: ReportEvent) -> bool:
        checks = ((self.modality, event.modality.value), (self.body_system, event.body_system.value),
                  (self.site, event.site), (self.language, event.language))
        return all(not allowed or value in allowed for allowed, value in checks)

    def spec(self) -> RouteSpec:
        return RouteSpec(name=self.name, adapter=self.adapter, prompt_template=self.prompt,
                         topic=draft_requests(self.name).name)


def _row(raw: dict[str, object], where: str) -> RouteRow:
    try:
        return RouteRow(
            name=str(raw["name"]), adapter=str(raw.get("adapter", "base")), prompt=str(raw.get("prompt", "impression_v1")),
            **{key: frozenset(str(v) for v in raw.get(key, ())) for key in ("modality", "body_system", "site", "language")},  # type: ignore[attr-defined]
        )
    except KeyError as exc:
        raise ValueError(f"routing table {where}: row without {exc}") from exc


@dataclass(frozen=True)
class RoutingTable:
    rows: tuple[RouteRow, ...]
    default: RouteRow

    @classmethod
    def load(cls, path: Path | None = None) -> RoutingTable:
        path = path or DEFAULT_TABLE
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        rows = tuple(_row(r, f"{path} row {i + 1}") for i, r in enumerate(data.get("route", [])))
        if "default" not in data:
            raise ValueError(f"routing table {path}: no [default] route")
        return cls(rows=rows, default=_row(data["default"], f"{path} default"))

    @property
    def routes(self) -> list[RouteSpec]:
        seen: dict[str, RouteSpec] = {}
        for row in (*self.rows, self.default):
            seen.setdefault(row.name, row.spec())
        return list(seen.values())

    def resolve(self, event: ReportEvent) -> RouteSpec:
        # A report the classifier could not place (issue 10: "the event says so") drafts on the default
        # route: a specialised adapter must never guess at a study it was not trained for.
        if event.classified_by == "unknown" or event.modality.value == "OT":
            return self.default.spec()
        for row in self.rows:
            if row.matches(event):
                return row.spec()
        return self.default.spec()


def route_event(event: ReportEvent, table: RoutingTable) -> RouteSpec:
    """The route of a report that needs a draft; ``Skip`` for signed, cancelled or empty reports."""
    if event.status not in DRAFTABLE:
        raise Skip("not_preliminary", f"status {event.status.value} needs no draft", accession=event.accession)
    if not event.findings.strip():
        raise Skip("no_findings", "report has no findings to draft from", accession=event.accession)
    return table.resolve(event)
