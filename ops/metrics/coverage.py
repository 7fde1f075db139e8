"""Entity coverage of a draft: ECR, UER and FCR from entity sets (stage: drift evaluation).

Input: the entities of the draft, of the signed final and of the FINDINGS (``entities.extract``).
Output: rates in [0, 1], or None when the rate has no denominator. Failure modes: none.
Entity = (kind, concept, assertion, laterality), as a set; match = same kind, concept, assertion, compatible sides.
Definitions and worked examples: ops/metrics/README.md ("Entities: ECR, UER, FCR").
"""

from __future__ import annotations

from collections.abc import Iterable

from ops.metrics.entities import Entity, extract


def matches(a: Entity, b: Entity) -> bool:
    return (a.kind == b.kind and a.concept == b.concept and a.assertion == b.assertion
            and (a.laterality == b.laterality or a.laterality is None or b.laterality is None))


def _matched(entity: Entity, others: Iterable[Entity]) -> bool:
    return any(matches(entity, other) for other in others)


def ecr(draft: set[Entity], final: set[Entity]) -> float | None:
    if not final:
        return None
    return sum(_matched(e, draft) for e in final) / len(final)


def uer(draft: set[Entity], final: set[Entity]) -> float | None:
    if not draft:
        return None
    return sum(not _matched(e, final) for e in draft) / len(draft)


def supported(entity: Entity, findings: set[Entity]) -> bool:
    if entity.kind == "summary":
        return not any(f.kind == "finding" and f.assertion == "present" for f in findings)
    return _matched(entity, findings)


def fcr(draft: set[Entity], findings: set[Entity], *, findings_given: bool) -> float | None:
    if not draft or not findings_given:
        return None
    return sum(supported(e, findings) for e in draft) / len(draft)


def factual_consistency(impression: str, findings: str) -> float | None:
    """FCR of one impression against one FINDINGS text (used to rank retrieval candidates)."""
    return fcr(set(extract(impression)), set(extract(findings)), findings_given=bool(findings.strip()))
