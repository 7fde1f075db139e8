"""The consistency check's contract: the flags a draft carries and what its route's policy did with it.

Input: nothing (pure data). Output: frozen pydantic v2 models, embedded in ``DraftImpression.consistency``.
Failure modes: ``pydantic.ValidationError`` on bad data. Flag texts quote the draft and the findings (PHI, like the
draft itself): never logged; kinds, counts, policy and action are not PHI. Details: schemas/README.md.
"""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field


class FlagKind(enum.StrEnum):
    """What disagrees with the findings (ops/consistency/README.md has the rules)."""

    MEASUREMENT = "measurement"  # a number + unit the findings do not contain
    LATERALITY = "laterality"  # a side the findings contradict (left/right/bilateral)
    NEGATION = "negation"  # the draft asserts what the findings negate, or negates what they report
    UNSUPPORTED = "unsupported"  # a finding the findings neither mention nor give evidence for
    # the draft is no usable impression at all (``DegenerateClass``): never posted as drafted, whatever the policy.
    # Its flag carries the class code in ``draft`` and nothing of the text (ids only: safe in NTEs, logs, metrics)
    DEGENERATE = "degenerate"


class DegenerateClass(enum.StrEnum):
    """Why a draft is degenerate (ops/consistency/degenerate.py; the published LLM failure modes it rests on)."""

    EMPTY = "empty"  # nothing but white space
    NO_CONTENT = "no_content"  # list markers, numbering, punctuation, single letters: no word, no Chinese word
    TEMPLATE_LEAK = "template_leak"  # chat-template tokens, the prompt's headers, the system prompt echoed
    REPETITION = "repetition"  # a loop: one sentence again and again, or most of its 4-grams repeats
    TRUNCATED = "truncated"  # stopped at the token limit (finish_reason "length"), so its end is missing
    FINDINGS_COPIED = "findings_copied"  # long findings given back nearly verbatim as the impression


class ConsistencyPolicy(enum.StrEnum):
    """What a route does with a draft that has flags (the routing table's ``consistency.policy``)."""

    POST_WITH_FLAGS = "post-with-flags"
    WITHHOLD = "withhold"
    FALLBACK_RETRIEVAL = "fallback-retrieval"
    REGENERATE = "regenerate"


class ConsistencyAction(enum.StrEnum):
    """What was done: the draft that results is the one carrying the check."""

    CLEAN = "clean"  # no flags: posted as drafted
    POSTED_WITH_FLAGS = "posted-with-flags"
    WITHHELD = "withheld"  # never posted; stored and captured beside the final
    RETRIEVAL = "retrieval"  # replaced by the retrieval drafter's draft (fewer flags)
    REGENERATED = "regenerated"  # the most consistent of ``samples`` drafts kept


class ConsistencyFlag(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FlagKind
    draft: str = Field(description="What the draft says: the measurement as written, or the finding with its side "
                                   "and assertion (e.g. 'left pleural effusion', 'no pneumothorax'); for a degenerate "
                                   "draft its DegenerateClass code only, never its text")
    findings: str = Field("", description="What the findings say instead (their measurements of the same finding, "
                                          "the side, the negation); empty when they say nothing of it")
    concept: str = Field("", description="The lexicon concept (ops/metrics/lexicon), empty for a measurement")

    def note(self) -> str:
        """One line for the radiologist (HL7 NTE, FHIR extension, demo), in the flag's own words."""
        if self.kind is FlagKind.DEGENERATE:
            return f"degenerate draft ({self.draft}): not usable as an impression"
        if self.kind is FlagKind.MEASUREMENT:
            return f"measurement {self.draft} is not in the findings" + (
                f" (findings: {self.findings})" if self.findings else "")
        if self.kind is FlagKind.UNSUPPORTED:
            return f"unsupported: {self.draft} is not in the findings" + (
                f" ({self.findings})" if self.findings else "")
        return f"{self.kind.value}: the draft says {self.draft}, the findings say {self.findings}"


class ReplacedDraft(BaseModel):
    """The drafter's first draft, when the route's policy replaced it (audit: what the model said, and why not)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    flags: list[ConsistencyFlag] = Field(default_factory=list)


class ConsistencyCheck(BaseModel):
    """The check of one draft against its own findings, and what the route's policy did."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flags: list[ConsistencyFlag] = Field(default_factory=list, description="Flags of this draft (the one kept)")
    policy: ConsistencyPolicy = ConsistencyPolicy.POST_WITH_FLAGS
    action: ConsistencyAction = ConsistencyAction.CLEAN
    replaced: ReplacedDraft | None = Field(None, description="The first draft, when the policy kept another one")
    samples: int = Field(1, description="Drafts compared (regenerate: n; fallback-retrieval: 2 when it drafted)")
    chosen: int = Field(0, description="Which of them was kept (0: the first draft)")
    note: str = Field("", description="Why the policy could not act as asked, in codes (e.g. no_similar_report)")
    checker: str = Field("", description="The checker's version (ops/consistency CHECKER_VERSION)")

    @property
    def withheld(self) -> bool:
        """Not to be posted: the policy withheld it, or it is degenerate (fail closed, whatever the action says)."""
        return self.action is ConsistencyAction.WITHHELD or any(f.kind is FlagKind.DEGENERATE for f in self.flags)

    @property
    def first_flags(self) -> list[ConsistencyFlag]:
        """The flags of the drafter's first draft (before the policy acted)."""
        return self.replaced.flags if self.replaced is not None else self.flags

    def kinds(self) -> list[str]:
        return sorted({flag.kind.value for flag in self.flags})
