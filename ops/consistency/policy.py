"""The route's consistency policy: a fresh draft checked, and kept, withheld, replaced or re-drafted (stage: infer).

Input: the drafter's ``DraftImpression``, its ``InferenceRequest``, the route's ``ConsistencyRule`` (routing table),
the drafter (a ``Sampler`` for regenerate) and the retrieval drafter. Output: the draft that goes on to the post
stage, carrying its ``ConsistencyCheck``. Failure modes: none raised; a fallback or re-draft that cannot be made
leaves the first draft, posted with its flags (withheld if degenerate), ``note`` says why. ops/consistency/README.md.
"""

from __future__ import annotations

from typing import Any

from model.inference.port import DrafterPort, Sampler
from model.inference.routing import ConsistencyRule
from ops.consistency.check import CHECKER_VERSION, assess, check, is_degenerate
from schemas import (
    ConsistencyAction,
    ConsistencyCheck,
    ConsistencyFlag,
    ConsistencyPolicy,
    Drafter,
    DraftImpression,
    GatewayError,
    InferenceRequest,
    ReplacedDraft,
)


def checked(draft: DraftImpression, flags: list[ConsistencyFlag], action: ConsistencyAction, rule: ConsistencyRule,
            replaced: tuple[DraftImpression, list[ConsistencyFlag]] | None = None, **more: Any) -> DraftImpression:
    """``draft`` carrying its check; ``replaced``: the first draft and its flags, when the policy kept another."""
    first = ReplacedDraft(text=replaced[0].text, flags=replaced[1]) if replaced is not None else None
    consistency = ConsistencyCheck(flags=flags, policy=rule.policy, action=action, replaced=first,
                                   checker=CHECKER_VERSION, **more)
    return draft.model_copy(update={"consistency": consistency})


async def enforce(draft: DraftImpression, request: InferenceRequest, rule: ConsistencyRule, *,
                  drafter: DrafterPort | None = None, retrieval: DrafterPort | None = None) -> DraftImpression:
    """``draft`` checked against its findings, the route's policy applied when it has flags."""
    flags = check(draft.text, draft.event.findings, finish_reason(draft))
    if is_degenerate(flags):
        return await _degenerate(draft, flags, request, rule, drafter, retrieval)
    if not flags:
        return checked(draft, flags, ConsistencyAction.CLEAN, rule)
    if rule.policy is ConsistencyPolicy.WITHHOLD:
        return checked(draft, flags, ConsistencyAction.WITHHELD, rule)
    if rule.policy is ConsistencyPolicy.FALLBACK_RETRIEVAL:
        return await _fallback(draft, flags, request, rule, retrieval)
    if rule.policy is ConsistencyPolicy.REGENERATE:
        return await _regenerate(draft, flags, request, rule, drafter)
    return checked(draft, flags, ConsistencyAction.POSTED_WITH_FLAGS, rule)


async def _fallback(draft: DraftImpression, flags: list[ConsistencyFlag], request: InferenceRequest,
                    rule: ConsistencyRule, retrieval: DrafterPort | None) -> DraftImpression:
    """The retrieval drafter's draft when it has fewer flags; else the first, posted with its flags."""
    if draft.drafter is Drafter.RETRIEVAL:
        note = "draft_is_retrieval"
    elif retrieval is None:
        note = "no_retrieval_drafter"
    else:
        try:
            other = await retrieval.draft(request)
        except GatewayError as exc:  # e.g. RetryLater("no_similar_report"): nothing similar indexed
            note = exc.code
        else:
            other_flags = check(other.text, other.event.findings, finish_reason(other))
            if len(other_flags) < len(flags) and not is_degenerate(other_flags):
                return checked(other, other_flags, ConsistencyAction.RETRIEVAL, rule, (draft, flags), samples=2,
                               chosen=1)
            note = "retrieval_degenerate" if is_degenerate(other_flags) else "retrieval_not_more_consistent"
            return checked(draft, flags, ConsistencyAction.POSTED_WITH_FLAGS, rule, samples=2, note=note)
    return checked(draft, flags, ConsistencyAction.POSTED_WITH_FLAGS, rule, note=note)


async def _regenerate(draft: DraftImpression, flags: list[ConsistencyFlag], request: InferenceRequest,
                      rule: ConsistencyRule, drafter: DrafterPort | None) -> DraftImpression:
    """The first draft and ``samples - 1`` sampled ones. A sample replaces the first only with fewer flags and no fewer
    findings the findings bear out (a draft that says nothing has no flags either); of those, the fewest flags, then
    the most borne out, then the earliest."""
    if draft.drafter is Drafter.RETRIEVAL or not isinstance(drafter, Sampler):
        note = "draft_is_retrieval" if draft.drafter is Drafter.RETRIEVAL else "drafter_cannot_sample"
        return checked(draft, flags, ConsistencyAction.POSTED_WITH_FLAGS, rule, note=note)
    try:
        more = await drafter.samples(request, rule.samples - 1, temperature=rule.temperature)
    except GatewayError as exc:  # the worker went down between the draft and the samples
        return checked(draft, flags, ConsistencyAction.POSTED_WITH_FLAGS, rule, note=exc.code)
    candidates = [(d, *assess(d.text, d.event.findings, finish_reason(d))) for d in (draft, *more)]
    said = candidates[0][2]
    better = [i for i, (_, f, n) in enumerate(candidates)
              if i == 0 or (len(f) < len(flags) and n >= said and not is_degenerate(f))]
    chosen = min(better, key=lambda i: (len(candidates[i][1]), -candidates[i][2], i))
    kept, kept_flags, _ = candidates[chosen]
    return checked(kept, kept_flags, ConsistencyAction.REGENERATED, rule, (draft, flags) if chosen else None,
                   samples=len(candidates), chosen=chosen)


def finish_reason(draft: DraftImpression) -> str:
    """The completion's finish_reason as the client recorded it ("" for a retrieval draft, or one from before)."""
    return draft.finish_reason


async def _degenerate(draft: DraftImpression, flags: list[ConsistencyFlag], request: InferenceRequest,
                      rule: ConsistencyRule, drafter: DrafterPort | None,
                      retrieval: DrafterPort | None) -> DraftImpression:
    """Fail closed, whatever the policy: a sampled draft that is not degenerate (fewest flags, most borne out,
    earliest), else the retrieval drafter's if not degenerate, else the first draft WITHHELD. The one kept answers to
    the route's policy for its own flags as far as withholding goes (``withhold`` with flags: withheld)."""
    steps, compared = [f"degenerate:{flags[0].draft}"], 1
    if draft.drafter is Drafter.RETRIEVAL or not isinstance(drafter, Sampler):
        steps.append("draft_is_retrieval" if draft.drafter is Drafter.RETRIEVAL else "drafter_cannot_sample")
    else:
        try:
            more = await drafter.samples(request, max(rule.samples - 1, 1), temperature=rule.temperature)
        except GatewayError as exc:  # the worker went down between the draft and the samples
            steps.append(exc.code)
        else:
            scored = [(i, d, *assess(d.text, d.event.findings, finish_reason(d))) for i, d in enumerate(more, 1)]
            usable = [s for s in scored if not is_degenerate(s[2])]
            compared += len(more)
            if usable:
                chosen, kept, kept_flags, _ = min(usable, key=lambda s: (len(s[2]), -s[3], s[0]))
                return _kept(kept, kept_flags, ConsistencyAction.REGENERATED, rule, (draft, flags), steps,
                             samples=compared, chosen=chosen)
            steps.append("samples_degenerate")
    if draft.drafter is not Drafter.RETRIEVAL:
        if retrieval is None:
            steps.append("no_retrieval_drafter")
        else:
            try:
                other = await retrieval.draft(request)
            except GatewayError as exc:  # e.g. RetryLater("no_similar_report")
                steps.append(exc.code)
            else:
                other_flags, compared = check(other.text, other.event.findings, finish_reason(other)), compared + 1
                if not is_degenerate(other_flags):
                    return _kept(other, other_flags, ConsistencyAction.RETRIEVAL, rule, (draft, flags), steps,
                                 samples=compared, chosen=compared - 1)
                steps.append("retrieval_degenerate")
    return checked(draft, flags, ConsistencyAction.WITHHELD, rule, samples=compared, note=";".join(steps))


def _kept(draft: DraftImpression, flags: list[ConsistencyFlag], action: ConsistencyAction, rule: ConsistencyRule,
          replaced: tuple[DraftImpression, list[ConsistencyFlag]], steps: list[str], **more: Any) -> DraftImpression:
    """The stand-in for a degenerate draft; withheld when it has flags and the route withholds flagged drafts."""
    if flags and rule.policy is ConsistencyPolicy.WITHHOLD:
        action = ConsistencyAction.WITHHELD
    return checked(draft, flags, action, rule, replaced, note=";".join(steps), **more)
