"""The consistency check on labelled synthetic pairs, per flag kind, in English and Chinese; measurements parsed and
compared across units; the demo's two wrong drafts flagged and its right ones not; the labelled set scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.consistency import check
from ops.consistency.measure import measurements
from schemas import FlagKind

PAIRS = Path(__file__).parents[1] / "fixtures" / "consistency" / "pairs.jsonl"
M, L, N, U = FlagKind.MEASUREMENT, FlagKind.LATERALITY, FlagKind.NEGATION, FlagKind.UNSUPPORTED

# (findings, draft, the flag kinds expected): a positive and a negative per kind and language at least
LABELLED = [
    # measurement
    ("A 12 mm nodule in the left lower lobe.", "12 mm left lower lobe nodule.", set()),
    ("A 12 mm nodule in the left lower lobe.", "1.2 cm left lower lobe nodule.", set()),
    ("A 12 mm nodule in the left lower lobe.", "21 mm left lower lobe nodule.", {M}),
    ("Mass measuring 4.1 x 3.2 cm in the right upper lobe.", "3.2 x 4.1 cm right upper lobe mass.", set()),
    ("Mass measuring 4.1 x 3.2 cm in the right upper lobe.", "4.1 x 3.8 cm right upper lobe mass.", {M}),
    ("Mass measuring 4.1 x 3.2 cm in the right upper lobe.", "4.1 mm right upper lobe mass.", {M}),
    ("左肾见一囊肿，大小约2.0×1.5厘米。", "左肾囊肿，约20×15mm。", set()),
    ("左肾见一囊肿，大小约2.0×1.5厘米。", "左肾囊肿，约2.5×1.5cm。", {M}),
    ("右肺上叶结节，直径约６ｍｍ。", "右肺上叶结节，约6毫米。", set()),
    # laterality
    ("Small left pleural effusion.", "Small left pleural effusion.", set()),
    ("Small left pleural effusion.", "Small right pleural effusion.", {L}),
    ("Bilateral pleural effusions.", "Left pleural effusion.", set()),
    ("Right pleural effusion.", "Bilateral pleural effusions.", {L}),
    ("左侧胸腔积液。", "左侧胸腔积液。", set()),
    ("左侧胸腔积液。", "右侧胸腔积液。", {L}),
    ("右肺下叶见斑片影。", "左肺下叶肺炎。", {L}),
    # negation
    ("No pleural effusion. No pneumothorax.", "No pleural effusion.", set()),
    ("No pleural effusion. No pneumothorax.", "Small pleural effusion.", {N}),
    ("Small left pneumothorax.", "No pneumothorax.", {N}),
    ("Small left pneumothorax.", "No acute cardiopulmonary abnormality.", {N}),
    ("Calcified granuloma. Lungs otherwise clear.", "No acute cardiopulmonary abnormality.", set()),
    ("双侧胸腔未见积液。", "双侧胸腔积液。", {N}),
    ("肝内无占位。", "肝内占位。", {N}),
    ("颅内未见出血。", "颅内未见出血。", set()),
    # unsupported
    ("Lungs are clear. Heart size is normal.", "Mild pulmonary edema.", {U}),
    ("Patchy consolidation in the right lower lobe.", "Right lower lobe pneumonia.", set()),
    ("Lungs are clear.", "Lungs are clear. No pneumothorax.", set()),  # a negative nobody stated is not flagged
    ("双肺纹理清晰。", "右肺上叶结节。", {U}),
    ("右肺下叶见斑片影。", "右肺下叶肺炎。", set()),
]


@pytest.mark.parametrize(("findings", "draft", "expected"), LABELLED)
def test_labelled_pairs(findings: str, draft: str, expected: set[FlagKind]) -> None:
    assert {flag.kind for flag in check(draft, findings)} == expected


def test_measurement_flag_names_the_findings_measurement_of_the_same_finding() -> None:
    findings = ("The gallbladder is normal. Well-circumscribed hyperechoic lesion in the hepatic dome measuring 4.1 cm. "
                "The spleen measures 17 cm in length.")
    [flag] = check("5.4 cm hyperechoic hepatic lesion, likely hemangioma. Splenomegaly.", findings)
    assert (flag.kind, flag.draft, flag.findings) == (M, "5.4 cm", "4.1 cm")
    assert flag.note() == "measurement 5.4 cm is not in the findings (findings: 4.1 cm)"


def test_entity_flags_say_what_each_side_says() -> None:
    [side] = check("Acute left eighth rib fracture.", "Acute fracture of the right eighth rib.")
    assert (side.kind, side.draft, side.findings, side.concept) == (L, "left fracture", "right fracture", "fracture")
    [negated] = check("Small pleural effusion.", "No pleural effusion.")
    assert negated.note() == "negation: the draft says pleural effusion, the findings say no pleural effusion"
    [missing] = check("Mild pulmonary edema.", "No pleural effusion. The cardiac silhouette is enlarged.")
    assert missing.note() == "unsupported: edema is not in the findings"


@pytest.mark.parametrize(("text", "expected"), [
    ("4.1 x 3.2 cm", [("length", (41.0, 32.0))]),
    ("4.1 cm x 3.2 cm", [("length", (41.0, 32.0))]),
    ("a 10-mm nodule and a 3-4 mm one", [("length", (10.0,)), ("length", (3.0, 4.0))]),
    ("大小约1.2×0.8cm，直径约８ｍｍ，12毫米，3厘米", [("length", (12.0, 8.0)), ("length", (8.0,)),
                                           ("length", (12.0,)), ("length", (30.0,))]),
    ("residual 45 ml; SUVmax 16.9", [("volume", (45.0,)), ("suv", (16.9,))]),
    ("1. 2. Rib fracture since 2023, T2/FLAIR", []),  # numbers without a unit are not measurements
])
def test_measurements_are_parsed_into_one_unit(text: str, expected: list[tuple[str, tuple[float, ...]]]) -> None:
    assert [(m.dimension, m.values) for m in measurements(text)] == expected


# The demo (cli/sample, drafts of the demo model as `make demo` shows them, and the signed finals).
DEMO = {
    "DEMO1001": ("A 10 mm ground-glass nodule is present in the lingula. No focal consolidation.\nSmall right "
                 "pneumothorax without mediastinal shift. No mediastinal or hilar lymphadenopathy. Acute fracture of "
                 "the right eighth rib.", ["1. 2. Acute right eighth rib fracture.",
                                           "10 mm ground-glass nodule in the lingula; recommend follow-up CT in 6 "
                                           "months. Small right pneumothorax. Acute right eighth rib fracture."]),
    "DEMO1002": ("No focal airspace opacity. No pneumothorax. No pleural effusion. The cardiac silhouette is "
                 "enlarged. Endotracheal tube tip 4.2 cm above the carina.",
                 ["Cardiomegaly. Endotracheal tube in satisfactory position."]),
    "DEMO1003": ("No restricted diffusion to suggest acute infarct. Susceptibility blooming in the right parietal "
                 "lobe measuring 6.5 cm. No abnormal enhancement. Scattered periventricular and subcortical T2/FLAIR "
                 "hyperintensities.", ["Right parietal lobe intraparenchymal hemorrhage. Mild chronic small vessel "
                                       "ischemic changes."]),
    "DEMO1004": ("The gallbladder is normal without stones or wall thickening. Well-circumscribed hyperechoic lesion "
                 "in the hepatic dome measuring 4.1 cm. No intrahepatic or extrahepatic biliary dilatation. Both "
                 "kidneys are normal in size without hydronephrosis. The spleen measures 17 cm in length.",
                 ["4.1 cm hyperechoic hepatic lesion, likely hemangioma. Splenomegaly."]),
    "DEMO1005": ("No FDG-avid pulmonary nodules. FDG-avid retroperitoneal lymph nodes with SUVmax 3.8. Focal FDG "
                 "uptake in the liver, SUVmax 8.9, without CT correlate. Hypermetabolic lytic lesion in the sternum "
                 "with SUVmax 16.9.", ["Hypermetabolic retroperitoneal nodes, concerning for metastasis. FDG-avid "
                                       "sternum lesion, suspicious for osseous metastasis.",
                                       "Hypermetabolic retroperitoneal nodes and focal hepatic hypermetabolism, "
                                       "concerning for metastases. FDG-avid sternal lesion, suspicious for osseous "
                                       "metastasis."]),
    "DEMO1006": ("颅内未见出血。左侧基底节区见斑点状低密度影，边界清楚。脑室系统扩大，脑沟、脑裂增宽。颅骨未见骨折。",
                 ["1. 左侧基底节区腔隙性脑梗死。 2. 脑萎缩。", "左侧基底节区腔隙性脑梗死。脑萎缩。"]),
}


@pytest.mark.parametrize("accession", sorted(DEMO))
def test_the_demo_drafts_that_are_right_have_no_flags(accession: str) -> None:
    findings, drafts = DEMO[accession]
    for draft in drafts:
        assert check(draft, findings) == [], draft


def test_the_demo_drafts_that_are_wrong_are_flagged() -> None:
    [size] = check("5.4 cm hyperechoic hepatic lesion, likely hemangioma. Splenomegaly.", DEMO["DEMO1004"][0])
    assert size.kind is M and size.draft == "5.4 cm" and size.findings == "4.1 cm"
    [edema] = check("- Mild pulmonary edema. - Endotracheal tube in satisfactory position.", DEMO["DEMO1002"][0])
    assert edema.kind is U and edema.concept == "edema"


def test_the_labelled_set_scores_well_per_kind() -> None:
    """bench/consistency.py prints these figures; here each kind must keep precision and recall >= 0.8."""
    pairs = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(pairs) >= 40 and {p["language"] for p in pairs} == {"en", "zh"}
    for kind in FlagKind:
        tp = fp = fn = 0
        for pair in pairs:
            got = kind in {f.kind for f in check(pair["draft"], pair["findings"])}
            want = kind.value in pair["flags"]
            tp, fp, fn = tp + (got and want), fp + (got and not want), fn + (want and not got)
        assert tp + fn >= 8, f"too few labelled {kind.value} pairs"
        assert tp / (tp + fp) >= 0.8 and tp / (tp + fn) >= 0.8, (kind.value, tp, fp, fn)
