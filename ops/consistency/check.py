"""The consistency check: a drafted impression against its own FINDINGS → flags (stage: infer, before posting).

Input: the draft text and the findings text (English, Chinese or mixed). Output: ``ConsistencyFlag``s: a degenerate
draft's one flag (degenerate.py), else measurements first, then entity flags in draft order. Failure modes: none
(pure; a lexicon or evidence file that is wrong fails at first use, at start-up). Built on ops/metrics (entities,
assertion, laterality); rules: ops/consistency/README.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ops.consistency.degenerate import degenerate
from ops.consistency.measure import Measurement, contained, measurements, sentences
from ops.metrics.entities import Entity, extract
from ops.metrics.lexicon import HERE as LEXICON_DIR
from ops.metrics.lexicon import Lexicon
from schemas import ConsistencyFlag, FlagKind

HERE = Path(__file__).resolve().parent
CHECKER_VERSION = "consistency-2"  # 2: degenerate drafts (degenerate.py)


@cache
def lexicon() -> Lexicon:
    """The metrics lexicon plus this package's ``terms.toml`` (signs, findings-style phrasings), loaded once."""
    return Lexicon.load([*sorted(LEXICON_DIR.glob("*.toml")), HERE / "terms.toml"])


@dataclass(frozen=True)
class Evidence:
    supports: dict[str, frozenset[str]]  # draft concept → findings concepts that support it
    tolerated: frozenset[str]  # findings a "normal" summary does not contradict


@cache
def evidence() -> Evidence:
    data = tomllib.loads((HERE / "evidence.toml").read_text(encoding="utf-8"))
    return Evidence({k: frozenset(v) for k, v in data.get("supports", {}).items()},
                    frozenset(data.get("summary", {}).get("tolerates", ())))


def check(draft: str, findings: str, finish_reason: str = "") -> list[ConsistencyFlag]:
    """The flags of ``draft`` against ``findings`` (none: nothing found that disagrees); a degenerate draft's first.
    ``finish_reason``: the completion's, when the drafter recorded it ("length": cut at the token limit)."""
    return assess(draft, findings, finish_reason)[0]


def is_degenerate(flags: Iterable[ConsistencyFlag]) -> bool:
    return any(flag.kind is FlagKind.DEGENERATE for flag in flags)


def assess(draft: str, findings: str, finish_reason: str = "") -> tuple[list[ConsistencyFlag], int]:
    """The flags, and how many distinct findings (or summaries) the draft states that raised none: what it says that
    the findings bear out (regenerate prefers, among drafts as consistent, the one that says more)."""
    junk = degenerate(draft, findings, finish_reason)
    if junk is not None:  # nothing it says can be relied on: the class alone, no text, and nothing borne out
        return [ConsistencyFlag(kind=FlagKind.DEGENERATE, draft=junk.value)], 0
    lex = lexicon()
    found = extract(findings, lex)
    mentioned = list(dict.fromkeys(extract(draft, lex)))  # each distinct mention once, in draft order
    flagged = [(e, f) for e in mentioned if (f := _entity_flag(e, found, evidence())) is not None]
    # "left rib fracture" against "right rib fracture" is one mistake: the place's side goes with its finding's
    sided = {e.laterality for e, f in flagged if e.kind == "finding" and f.kind is FlagKind.LATERALITY}
    flags = measurement_flags(draft, findings, lex)
    for entity, flag in flagged:
        if not (entity.kind == "anatomy" and entity.laterality in sided) and flag not in flags:
            flags.append(flag)
    wrong = {e for e, _ in flagged}
    borne_out = sum(e.kind in ("finding", "summary") and e not in wrong for e in mentioned)
    return flags, borne_out


def measurement_flags(draft: str, findings: str, lex: Lexicon) -> list[ConsistencyFlag]:
    """A measurement of the draft with a value the findings do not give (in any unit of its dimension)."""
    given = measurements(findings)
    flags: list[ConsistencyFlag] = []
    for measure in measurements(draft):
        if not contained(measure, given):
            related = _related(measure, draft, findings, given, lex)
            flag = ConsistencyFlag(kind=FlagKind.MEASUREMENT, draft=measure.text, findings=", ".join(related))
            if flag not in flags:
                flags.append(flag)
    return flags


def _concepts(text: str, lex: Lexicon) -> tuple[set[str], set[str]]:
    entities = extract(text, lex)
    return ({e.concept for e in entities if e.kind == "finding"}, {e.concept for e in entities if e.kind == "anatomy"})


def _related(measure: Measurement, draft: str, findings: str, given: list[Measurement], lex: Lexicon) -> list[str]:
    """The findings' measurements of what the draft measured: those in a findings sentence naming the same finding
    as the draft's sentence (else the same anatomy), so the flag can say "findings: 4.1 cm"."""
    sentence = next((s for start, s in reversed(sentences(draft)) if start <= measure.start), "")
    wanted_findings, wanted_anatomy = _concepts(sentence, lex)
    by_finding: list[str] = []
    by_anatomy: list[str] = []
    for start, text in sentences(findings):
        inside = [m.text for m in given if start <= m.start < start + len(text) and m.dimension == measure.dimension]
        if not inside:
            continue
        names, places = _concepts(text, lex)
        if names & wanted_findings:
            by_finding += inside
        elif places & wanted_anatomy:
            by_anatomy += inside
    return list(dict.fromkeys(by_finding or by_anatomy))


def compatible(draft_side: str | None, findings_side: str | None) -> bool:
    """Sides agree: equal, either unspecified, or the draft's left/right within the findings' bilateral."""
    return draft_side is None or findings_side is None or draft_side == findings_side or findings_side == "bilateral"


def describe(entity: Entity) -> str:
    """'left pleural effusion', 'no pneumothorax', 'possible pneumonia' (concept names from the lexicon)."""
    words = entity.concept.removeprefix("sign_").replace("_", " ")
    if entity.kind == "summary":
        return "no abnormality" if words == "normal" else words
    words = f"{entity.laterality} {words}" if entity.laterality else words
    return {"negated": f"no {words}", "uncertain": f"possible {words}"}.get(entity.assertion, words)


def _flag(kind: FlagKind, entity: Entity, findings: Iterable[Entity] = ()) -> ConsistencyFlag:
    said = " / ".join(dict.fromkeys(describe(f) for f in findings))
    return ConsistencyFlag(kind=kind, draft=describe(entity), findings=said, concept=entity.concept)


def _entity_flag(entity: Entity, found: list[Entity], ev: Evidence) -> ConsistencyFlag | None:
    if entity.kind == "summary":
        asserted = [f for f in found
                    if f.kind == "finding" and f.assertion == "present" and f.concept not in ev.tolerated]
        return _flag(FlagKind.NEGATION, entity, asserted[:3]) if asserted else None
    same = [f for f in found if f.kind == entity.kind and f.concept == entity.concept]
    if entity.kind == "anatomy":  # a place: only its side can disagree (every mention of it in the findings sided)
        if entity.laterality and same and all(f.laterality for f in same) and \
                not any(compatible(entity.laterality, f.laterality) for f in same):
            return _flag(FlagKind.LATERALITY, entity, same)
        return None
    if entity.assertion == "negated":  # the draft says no X: wrong only when the findings report X there
        reported = [f for f in same if f.assertion == "present" and compatible(entity.laterality, f.laterality)]
        return _flag(FlagKind.NEGATION, entity, reported[:1]) if reported else None
    asserted = [f for f in same if f.assertion != "negated"]
    if any(compatible(entity.laterality, f.laterality) for f in asserted):
        return None
    negated = [f for f in same if f.assertion == "negated" and compatible(entity.laterality, f.laterality)]
    if negated:
        return _flag(FlagKind.NEGATION, entity, negated[:1])
    if asserted:
        return _flag(FlagKind.LATERALITY, entity, asserted)
    signs = [f for f in found if f.concept in ev.supports.get(entity.concept, ()) and f.assertion != "negated"]
    if any(compatible(entity.laterality, f.laterality) for f in signs):
        return None
    if signs:  # the evidence is there, on the other side
        return _flag(FlagKind.LATERALITY, entity, signs)
    return _flag(FlagKind.UNSUPPORTED, entity)
