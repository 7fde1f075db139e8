"""The metrics entry point: a draft beside its signed final (and FINDINGS) → ``PairScores``.

Input: candidate, reference, optionally FINDINGS and a language tag (detected when missing, by
``schemas.language``). Output: ``PairScores`` (ROUGE-1/2/L F1, BLEU-4, ECR/UER/FCR, semantic) per pair and
their means (``aggregate``); all in [0, 1] (semantic [-1, 1]), None where undefined (see ``coverage``;
semantic for Chinese). Failure modes: semantic scoring raises what the embedding model's loader raises.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

from ops.metrics import coverage, overlap
from ops.metrics import semantic as embedding
from ops.metrics.entities import extract
from ops.metrics.lexicon import Lexicon, default_lexicon
from ops.metrics.tokens import tokenize
from schemas.language import language_of

FIELDS = ("rouge1", "rouge2", "rougeL", "bleu4", "ecr", "uer", "fcr", "semantic")


@dataclass(frozen=True, slots=True)
class PairScores:
    rouge1: float
    rouge2: float
    rougeL: float
    bleu4: float
    ecr: float | None
    uer: float | None
    fcr: float | None
    semantic: float | None = None
    language: str = "en"

    def as_dict(self) -> dict[str, Any]:
        """The metric fields only (what the CLI prints per pair)."""
        values = asdict(self)
        return {name: values[name] for name in FIELDS}


class Pair(NamedTuple):
    candidate: str
    reference: str
    findings: str = ""
    language: str | None = None


def score_pair(candidate: str, reference: str, *, findings: str = "", language: str | None = None,
               semantic: bool = False, lexicon: Lexicon | None = None) -> PairScores:
    """All metrics of one draft (``candidate``) against its signed final (``reference``)."""
    lang = language_of(language, candidate, reference)
    r = overlap.rouge(tokenize(candidate, lang), tokenize(reference, lang))
    lexicon = lexicon or default_lexicon()
    draft, final = set(extract(candidate, lexicon)), set(extract(reference, lexicon))
    facts = set(extract(findings, lexicon)) if findings.strip() else set()
    scores = PairScores(
        rouge1=r.rouge1, rouge2=r.rouge2, rougeL=r.rougeL,
        bleu4=overlap.bleu4(candidate, reference, lang),
        ecr=coverage.ecr(draft, final), uer=coverage.uer(draft, final),
        fcr=coverage.fcr(draft, facts, findings_given=bool(findings.strip())),
        language=lang,
    )
    if semantic and lang == "en":
        scores = replace(scores, semantic=embedding.similarities([(candidate, reference)])[0])
    return scores


def score_pairs(pairs: Iterable[Pair | Sequence[str | None]], *, semantic: bool = False,
                progress: bool = False) -> list[PairScores]:
    """``score_pair`` over many pairs; semantic similarity is batched over all English pairs."""
    items = [p if isinstance(p, Pair) else Pair(*p) for p in pairs]  # type: ignore[arg-type]
    iterator: Iterable[Pair] = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc="metrics", unit="pair")
    out = [score_pair(p.candidate, p.reference, findings=p.findings or "", language=p.language) for p in iterator]
    if semantic:
        english = [i for i, s in enumerate(out) if s.language == "en"]
        sims = embedding.similarities([(items[i].candidate, items[i].reference) for i in english]) if english else []
        for i, sim in zip(english, sims, strict=True):
            out[i] = replace(out[i], semantic=sim)
    return out


def aggregate(scores: Sequence[PairScores]) -> dict[str, Any]:
    """Mean of each metric over the pairs where it is defined (None ignored) and how many those are.

    ``{"pairs": N, "rouge1": mean | None, …, "semantic": mean | None,
       "counts": {"rouge1": n, …}, "languages": {"en": n, "zh": n}}``
    """
    result: dict[str, Any] = {"pairs": len(scores)}
    counts: dict[str, int] = {}
    for name in FIELDS:
        values = [v for v in (getattr(s, name) for s in scores) if v is not None]
        result[name] = statistics.fmean(values) if values else None
        counts[name] = len(values)
    result["counts"] = counts
    languages: dict[str, int] = {}
    for s in scores:
        languages[s.language] = languages.get(s.language, 0) + 1
    result["languages"] = languages
    return result
