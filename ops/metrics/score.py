"""The metrics entry point: a draft beside its signed final (and FINDINGS) → ``PairScores``.

Input: candidate, reference, optionally FINDINGS, a language tag (detected when missing, by ``schemas.language``) and
``MetricsSettings``. Output: ``PairScores`` (ROUGE-1/2/L, BLEU-4, METEOR, ECR/UER/FCR; BERTScore and SBERT when asked)
per pair, their means (``aggregate``) and how each was computed (``methods``); None where undefined. Failure modes:
the embedding scores raise what their model loaders raise; a set but unreadable WordNet raises ``WordNetError``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from ops.metrics import bertscore as bert
from ops.metrics import coverage, overlap
from ops.metrics import semantic as embedding
from ops.metrics.entities import extract
from ops.metrics.lexicon import Lexicon, default_lexicon
from ops.metrics.meteor import meteor as meteor_score
from ops.metrics.meteor import variant
from ops.settings import MetricsSettings
from schemas.language import language_of

FIELDS = ("rouge1", "rouge2", "rougeL", "bleu4", "meteor", "bertscore", "semantic", "ecr", "uer", "fcr")
EMBEDDING_FIELDS = ("bertscore", "semantic")  # English only; computed when asked (they load torch and an encoder)
DEFAULTS = MetricsSettings.model_construct()  # the built-in defaults, without reading the environment


@dataclass(frozen=True, slots=True)
class PairScores:
    rouge1: float
    rouge2: float
    rougeL: float
    bleu4: float
    ecr: float | None
    uer: float | None
    fcr: float | None
    meteor: float | None = None
    bertscore: float | None = None
    semantic: float | None = None
    language: str = "en"

    def as_dict(self) -> dict[str, Any]:
        """The metric fields only (what the CLI prints per pair)."""
        return {name: getattr(self, name) for name in FIELDS}  # flat fields: no deep copy (asdict) needed


class Pair(NamedTuple):
    candidate: str
    reference: str
    findings: str = ""
    language: str | None = None


def score_pair(candidate: str, reference: str, *, findings: str = "", language: str | None = None,
               semantic: bool = False, bertscore: bool = False, meteor: bool = True, lexicon: Lexicon | None = None,
               settings: MetricsSettings = DEFAULTS) -> PairScores:
    """All metrics of one draft (``candidate``) against its signed final (``reference``).

    ``meteor=False`` leaves METEOR None and WordNet unloaded (≈ 2 s and ≈ 90 MB once per process)."""
    lang = language_of(language, candidate, reference)
    r = overlap.rouge(candidate, reference, lang)
    lexicon = lexicon or default_lexicon()
    draft, final = set(extract(candidate, lexicon)), set(extract(reference, lexicon))
    facts = set(extract(findings, lexicon)) if findings.strip() else set()
    scores = PairScores(
        rouge1=r.rouge1, rouge2=r.rouge2, rougeL=r.rougeL,
        bleu4=overlap.bleu4(candidate, reference, lang),
        meteor=meteor_score(candidate, reference, lang, setting=settings.wordnet) if meteor else None,
        ecr=coverage.ecr(draft, final), uer=coverage.uer(draft, final),
        fcr=coverage.fcr(draft, facts, findings_given=bool(findings.strip())),
        language=lang,
    )
    if lang == "en" and (semantic or bertscore):
        scores = _with_embeddings([scores], [(candidate, reference)], semantic=semantic, bertscore=bertscore,
                                  settings=settings)[0]
    return scores


def _with_embeddings(scores: list[PairScores], pairs: list[tuple[str, str]], *, semantic: bool, bertscore: bool,
                     settings: MetricsSettings) -> list[PairScores]:
    """``scores`` with SBERT and/or BERTScore of the matching (candidate, reference) pairs, batched."""
    if semantic:
        scores = [replace(s, semantic=v) for s, v in zip(scores, embedding.similarities(pairs), strict=True)]
    if bertscore:
        f1 = bert.f1(pairs, setting=settings.bertscore_model, layer=settings.bertscore_layer)
        scores = [replace(s, bertscore=v) for s, v in zip(scores, f1, strict=True)]
    return scores


def score_pairs(pairs: Iterable[Pair | Sequence[str | None]], *, semantic: bool = False, bertscore: bool = False,
                meteor: bool = True, progress: bool = False, settings: MetricsSettings = DEFAULTS) -> list[PairScores]:
    """``score_pair`` over many pairs; SBERT and BERTScore are batched over all English pairs (models loaded only
    when asked for and some pair is English)."""
    items = [p if isinstance(p, Pair) else Pair(*p) for p in pairs]  # type: ignore[arg-type]
    iterator: Iterable[Pair] = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc="metrics", unit="pair")
    out = [score_pair(p.candidate, p.reference, findings=p.findings or "", language=p.language, meteor=meteor,
                      settings=settings) for p in iterator]
    english = [i for i, s in enumerate(out) if s.language == "en"]
    if english and (semantic or bertscore):
        done = _with_embeddings([out[i] for i in english], [(items[i].candidate, items[i].reference) for i in english],
                                semantic=semantic, bertscore=bertscore, settings=settings)
        for i, scored in zip(english, done, strict=True):
            out[i] = scored
    return out


def methods(settings: MetricsSettings = DEFAULTS, *, semantic: bool = True, bertscore: bool = True) -> dict[str, str]:
    """How each metric is computed (library, version, variant, encoder and layer), as reports print it."""
    skipped = "not computed (not asked for)"
    return {
        "rouge": overlap.rouge_method(),
        "bleu4": f"sacrebleu sentence BLEU, {overlap.bleu_signature('en')} (zh: tok:zh)",
        "meteor": variant(settings.wordnet),
        "bertscore": (bert.method(settings.bertscore_model, settings.bertscore_layer) + "; English only")
        if bertscore else skipped,
        "semantic": (embedding.method() + "; English only") if semantic else skipped,
        "ecr_uer_fcr": "entity coverage over the lexicon in ops/metrics/lexicon (concept, assertion, laterality)",
    }


def aggregate(scores: Sequence[PairScores]) -> dict[str, Any]:
    """Mean of each metric over the pairs where it is defined (None ignored) and how many those are.

    ``{"pairs": N, "rouge1": mean | None, …, "fcr": mean | None,
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
