"""Route stage logic: which report gets a draft, and which route (adapter, site adapter, prompt) drafts it.

Input: a ``ReportEvent``. Output: ``RouteSpec`` (name, adapter, the site's adapter, prompt, topic), or ``Skip`` when the
report is not ours to draft; a route's ``ConsistencyRule``. Failure modes: a malformed table, an unknown prompt or bad
site styles raise ``ValueError`` at load (start-up), never per event. The table is data (``routes.toml`` or a site
file): the first row matching modality, body system, site, language wins, else ``default``. See model/README.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model.inference.adapter_choice import check_site_adapters
from model.inference.promotion import Promotion
from model.inference.prompts import default_prompts, template_name
from schemas import ConsistencyPolicy, ReportEvent, ReportStatus, RouteSpec, Skip
from schemas.topics import draft_requests

DEFAULT_TABLE = Path(__file__).parent / "routes.toml"
DRAFTABLE = {ReportStatus.PRELIMINARY, ReportStatus.IN_PROGRESS, ReportStatus.REGISTERED}
MAX_SAMPLES = 16  # regenerate: drafts per report at most (each is a completion on the worker)


@dataclass(frozen=True)
class ConsistencyRule:
    """What a draft with consistency flags does on a route (ops/consistency): ``regenerate`` drafts ``samples`` in
    all (the first greedy, the others sampled at ``temperature``) and keeps the one with the fewest flags."""

    policy: ConsistencyPolicy = ConsistencyPolicy.POST_WITH_FLAGS
    samples: int = 1
    temperature: float = 0.8

    @classmethod
    def parse(cls, raw: object, where: str, default: ConsistencyRule | None = None) -> ConsistencyRule:
        """A ``consistency = {policy, samples, temperature}`` value; what it leaves out comes from ``default``."""
        base = default or cls()
        if raw is None:
            return base
        if not isinstance(raw, dict) or set(raw) - {"policy", "samples", "temperature"}:
            raise ValueError(f"routing table {where}: consistency takes policy, samples, temperature")
        try:
            policy = ConsistencyPolicy(raw.get("policy", base.policy))
        except ValueError:
            raise ValueError(f"routing table {where}: consistency policy must be one of "
                             f"{', '.join(p.value for p in ConsistencyPolicy)}") from None
        regenerate = policy is ConsistencyPolicy.REGENERATE
        inherited = base.samples if base.policy is policy else (4 if regenerate else 1)
        samples, temperature = raw.get("samples", inherited), raw.get("temperature", base.temperature)
        low = 2 if regenerate else 1
        if isinstance(samples, bool) or not isinstance(samples, int) or not low <= samples <= MAX_SAMPLES:
            raise ValueError(f"routing table {where}: consistency samples must be an integer in [{low}, {MAX_SAMPLES}]")
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 < temperature <= 2:
            raise ValueError(f"routing table {where}: consistency temperature must lie in (0, 2]")
        return cls(policy, samples if regenerate else 1, float(temperature))


@dataclass(frozen=True)
class RouteRow:
    name: str
    adapter: str
    prompt: str
    modality: frozenset[str] = frozenset()
    body_system: frozenset[str] = frozenset()
    site: frozenset[str] = frozenset()
    language: frozenset[str] = frozenset()
    consistency: ConsistencyRule = ConsistencyRule()
    promotion: Promotion = Promotion()  # its start mode and what takes it live
    site_adapters: tuple[tuple[str, str], ...] = ()  # (site, adapter): the chain's first link at that site

    def matches(self, event: ReportEvent) -> bool:
        checks = ((self.modality, event.modality.value), (self.body_system, event.body_system.value),
                  (self.site, event.site), (self.language, event.language))
        return all(not allowed or value in allowed for allowed, value in checks)

    def spec(self, site: str = "") -> RouteSpec:
        return RouteSpec(name=self.name, adapter=self.adapter, prompt_template=self.prompt,
                         topic=draft_requests(self.name).name, site_adapter=dict(self.site_adapters).get(site, "") if site else "")


def _row(raw: dict[str, object], where: str, consistency: ConsistencyRule) -> RouteRow:
    try:
        return RouteRow(
            name=str(raw["name"]), adapter=str(raw.get("adapter", "base")), prompt=str(raw.get("prompt", "impression_v1")),
            **{key: frozenset(str(v) for v in raw.get(key, ())) for key in ("modality", "body_system", "site", "language")},  # type: ignore[attr-defined]
            consistency=ConsistencyRule.parse(raw.get("consistency"), where, consistency),
            promotion=Promotion(),  # the row's mode and promotion: set by _promoted
            site_adapters=check_site_adapters(raw.get("site_adapters"), where),
        )
    except KeyError as exc:
        raise ValueError(f"routing table {where}: row without {exc}") from exc


@dataclass(frozen=True)
class RoutingTable:
    rows: tuple[RouteRow, ...]
    default: RouteRow
    consistency_default: ConsistencyRule = ConsistencyRule()  # the table's [consistency]
    promotion_default: Promotion = Promotion()  # the table's mode and [promotion]

    @classmethod
    def load(cls, path: Path | None = None) -> RoutingTable:
        path = path or DEFAULT_TABLE
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        prompts = default_prompts()  # templates and site styles: a broken one fails here, at start-up
        table_rule = ConsistencyRule.parse(data.get("consistency"), f"{path} [consistency]")
        rows = tuple(_row(r, f"{path} row {i + 1}", table_rule) for i, r in enumerate(data.get("route", [])))
        if "default" not in data:
            raise ValueError(f"routing table {path}: no [default] route")
        table = cls(rows=rows, default=_row(data["default"], f"{path} default", table_rule),
                    consistency_default=table_rule)
        rules: dict[str, ConsistencyRule] = {}
        for row in (*rows, table.default):
            if template_name(row.prompt) not in prompts.names():
                raise ValueError(f"routing table {path}: route {row.name!r} names prompt {row.prompt!r}, which is not "
                                 f"one of {', '.join(prompts.names())}")
        for row in (*rows, table.default):  # a route is one route wherever its rows match: one policy
            if rules.setdefault(row.name, row.consistency) != row.consistency:
                raise ValueError(f"routing table {path}: route {row.name!r} has rows with different consistency rules")
        return _promoted(table, data, path)

    @property
    def routes(self) -> list[RouteSpec]:
        seen: dict[str, RouteSpec] = {}
        for row in (*self.rows, self.default):
            seen.setdefault(row.name, row.spec())
        return list(seen.values())

    def consistency(self, route: str) -> ConsistencyRule:
        """The route's consistency rule; a route the table no longer names (a parked request) gets the table's."""
        for row in (*self.rows, self.default):
            if row.name == route:
                return row.consistency
        return self.consistency_default

    def promotion(self, route: str) -> Promotion:
        """The route's start mode and promotion thresholds; a route the table no longer names gets the table's."""
        for row in (*self.rows, self.default):
            if row.name == route:
                return row.promotion
        return self.promotion_default

    def resolve(self, event: ReportEvent) -> RouteSpec:
        # A report the classifier could not place (issue 10: "the event says so") drafts on the default
        # route: a specialised adapter must never guess at a study it was not trained for.
        if event.classified_by == "unknown" or event.modality.value == "OT":
            return self.default.spec(event.site)
        for row in self.rows:
            if row.matches(event):
                return row.spec(event.site)
        return self.default.spec(event.site)


def _promoted(table: RoutingTable, data: dict[str, Any], path: Path) -> RoutingTable:
    """The table with each row's ``mode`` and ``promotion`` (README "Routing"), the table's own as their defaults."""
    base = Promotion.parse(data.get("mode"), data.get("promotion"), f"{path} [promotion]")
    raws = [*data.get("route", []), data["default"]]
    wheres = [*(f"{path} row {i + 1}" for i in range(len(raws) - 1)), f"{path} default"]
    rows = [replace(row, promotion=Promotion.parse(raw.get("mode"), raw.get("promotion"), where, base))
            for row, raw, where in zip((*table.rows, table.default), raws, wheres, strict=True)]
    seen: dict[str, Promotion] = {}
    for row in rows:  # one route, one mode: its rows must agree
        if seen.setdefault(row.name, row.promotion) != row.promotion:
            raise ValueError(f"routing table {path}: route {row.name!r} has rows with different modes or promotion")
    return replace(table, rows=tuple(rows[:-1]), default=rows[-1], promotion_default=base)


def route_event(event: ReportEvent, table: RoutingTable) -> RouteSpec:
    """The route of a report that needs a draft; ``Skip`` for signed, cancelled or empty reports."""
    if event.status not in DRAFTABLE:
        raise Skip("not_preliminary", f"status {event.status.value} needs no draft", accession=event.accession)
    if not event.findings.strip():
        raise Skip("no_findings", "report has no findings to draft from", accession=event.accession)
    return table.resolve(event)
