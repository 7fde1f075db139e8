"""Deterministic synthetic radiology corpus: FINDINGS → IMPRESSION pairs for the demo routes (invented, no patient data).

Stage: none (a data source for the demo model build, the demo and the tests). Input: ``synthetic_routes.toml`` beside
this module (routes, organs, sentence templates, slots), a route name, a count, a seed. Output: ``CorpusItem`` tuples;
the same (route, n, seed) gives the same items on any machine (``random.Random`` seeded with a string is stable).
Failure modes: ``KeyError`` for an unknown route; ``tomllib.TOMLDecodeError`` for a broken data file.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from schemas.events import (
    BodySystem,
    InferenceRequest,
    Modality,
    ReportEvent,
    ReportStatus,
    RouteSpec,
    Source,
    event_id_for,
)
from schemas.topics import draft_requests

ROUTES_FILE = Path(__file__).with_name("synthetic_routes.toml")
ListStyle = Literal["numbered", "dash", "plain"]
SYNTHETIC_SENDER = "synthetic"


@dataclass(frozen=True)
class CorpusItem:
    route: str
    modality: Modality
    body_system: BodySystem
    language: str
    procedure: str
    findings: str
    impression: str  # in the route's house style (what the radiologist signs)
    impression_items: tuple[str, ...]  # the same statements, unformatted
    abnormal: bool

    def impression_as(self, style: ListStyle) -> str:
        return format_impression(self.impression_items, style, self.language)


@cache
def _spec() -> dict[str, Any]:
    with ROUTES_FILE.open("rb") as fh:
        return tomllib.load(fh)


def routes() -> tuple[str, ...]:
    """The demo routes, in file order."""
    return tuple(_spec()["routes"])


def format_impression(items: Sequence[str], style: ListStyle, language: str) -> str:
    """Join impression statements in one list style (``plain`` runs them together as prose)."""
    if style == "numbered":
        return "\n".join(f"{i}. {text}" for i, text in enumerate(items, start=1))
    if style == "dash":
        return "\n".join(f"- {text}" for text in items)
    return ("" if language == "zh" else " ").join(items)


def _capitalised(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _slot_values(rng: random.Random) -> dict[str, str]:
    """One value for every slot; a template uses the ones it names (cheap, keeps the rng stream fixed)."""
    slots = _spec()["slots"]
    values = {name: rng.choice(options) for name, options in slots["choice"].items()}
    for name, (low, high, decimals) in slots["number"].items():
        number = rng.uniform(low, high)
        values[name] = f"{number:.{int(decimals)}f}" if decimals else str(round(number))
    return values


def _one(route: str, rng: random.Random) -> CorpusItem:
    spec = _spec()["routes"][route]
    findings: list[str] = []
    items: list[str] = []
    for organ in spec["organs"]:
        if organ["abnormal"] and rng.random() < spec["p_abnormal"]:
            template = rng.choice(organ["abnormal"])
            values = _slot_values(rng)
            findings.append(_capitalised(template["findings"].format(**values)))
            items.append(_capitalised(template["impression"].format(**values)))
        else:
            findings.append(rng.choice(organ["normal"]))
    abnormal = bool(items)
    if not abnormal:
        items.append(rng.choice(spec["normal_impression"]))
    language = spec["language"]
    return CorpusItem(
        route=route,
        modality=Modality(spec["modality"]),
        body_system=BodySystem(spec["body_system"]),
        language=language,
        procedure=spec["procedure"],
        findings=("" if language == "zh" else " ").join(findings),
        impression=format_impression(items, spec["list_style"], language),
        impression_items=tuple(items),
        abnormal=abnormal,
    )


def generate(route: str, n: int, *, seed: int = 0) -> list[CorpusItem]:
    """``n`` reports for one route; deterministic in (route, n, seed)."""
    if route not in _spec()["routes"]:
        raise KeyError(f"unknown synthetic route {route!r}")
    rng = random.Random(f"{seed}:{route}")
    return [_one(route, rng) for _ in range(n)]


def corpus(n_per_route: int, *, seed: int = 0, only: Iterable[str] | None = None) -> list[CorpusItem]:
    """``n_per_route`` reports for each demo route (or the ``only`` ones), routes in file order."""
    return [item for route in (only or routes()) for item in generate(route, n_per_route, seed=seed)]


def as_request(
    item: CorpusItem, index: int, *, adapter: str = "base", prompt_template: str = "impression_v1", site: str = "DEMO"
) -> InferenceRequest:
    """Wrap one item as the ``InferenceRequest`` the route stage would emit (preliminary, has findings)."""
    accession = f"SYN-{item.route}-{index:06d}"
    event = ReportEvent(
        event_id=event_id_for(SYNTHETIC_SENDER, accession),
        source=Source.HL7V2,
        message_control_id=accession,
        sender=SYNTHETIC_SENDER,
        accession=accession,
        site=site,
        modality=item.modality,
        body_system=item.body_system,
        procedure_text=item.procedure,
        findings=item.findings,
        status=ReportStatus.PRELIMINARY,
        language=item.language,
    )
    route = RouteSpec(name=item.route, adapter=adapter, prompt_template=prompt_template, topic=draft_requests(item.route).name)
    return InferenceRequest(event=event, route=route)


def data_fingerprint() -> bytes:
    """The bytes that decide the corpus (for build-recipe hashes)."""
    return ROUTES_FILE.read_bytes()
