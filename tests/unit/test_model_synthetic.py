"""The synthetic corpus (model/demo/synthetic.py): deterministic, covers the demo routes, varied."""

from __future__ import annotations

import re

from model.demo import synthetic
from schemas import BodySystem, Modality, ReportStatus
from schemas.language import has_ideograph

DEMO_ROUTES = {"ct_chest", "xr_chest", "mr_head", "us_abdomen", "pet_ct", "ct_head_zh"}


def test_same_seed_same_corpus_other_seed_other_corpus() -> None:
    assert synthetic.corpus(20, seed=4) == synthetic.corpus(20, seed=4)
    assert synthetic.corpus(20, seed=4) != synthetic.corpus(20, seed=5)
    assert synthetic.generate("ct_chest", 30, seed=1)[:10] == synthetic.generate("ct_chest", 10, seed=1)


def test_every_demo_route_with_its_modality_system_and_language() -> None:
    assert DEMO_ROUTES <= set(synthetic.routes())
    first = {item.route: item for item in synthetic.corpus(1)}
    assert (first["pet_ct"].modality, first["pet_ct"].body_system) == (Modality.PT, BodySystem.WHOLE_BODY)
    assert (first["mr_head"].modality, first["mr_head"].body_system) == (Modality.MR, BodySystem.HEAD)
    assert first["ct_head_zh"].language == "zh" and has_ideograph(first["ct_head_zh"].findings)
    assert all(item.language == "en" for route, item in first.items() if route != "ct_head_zh")


def test_corpus_has_normal_and_abnormal_reports_with_sizes_and_negations() -> None:
    items = synthetic.generate("ct_chest", 200)
    normal = [item for item in items if not item.abnormal]
    abnormal = [item for item in items if item.abnormal]
    assert len(normal) > 20 and len(abnormal) > 20 and len({item.findings for item in items}) > 100
    assert all(item.impression.startswith("1. ") for item in items)  # ct_chest's house style
    nodule = next(item for item in abnormal if "nodule" in item.findings)
    size = re.search(r"(\d+) mm \w+(?:-\w+)? nodule", nodule.findings)
    assert size and f"{size.group(1)} mm" in nodule.impression  # findings and impression agree
    assert any("No pleural effusion" in item.findings or "no pleural effusion" in item.findings for item in items)
    pet = " ".join(item.findings for item in synthetic.generate("pet_ct", 100))
    assert "SUVmax" in pet and "FDG-avid" in pet


def test_list_styles() -> None:
    item = next(i for i in synthetic.generate("xr_chest", 100) if len(i.impression_items) >= 2)
    assert item.impression == "\n".join(f"- {text}" for text in item.impression_items)
    assert item.impression_as("numbered").startswith("1. ") and "\n2. " in item.impression_as("numbered")
    assert item.impression_as("plain") == " ".join(item.impression_items)


def test_as_request_is_a_preliminary_report_on_the_route() -> None:
    item = synthetic.generate("us_abdomen", 1)[0]
    request = synthetic.as_request(item, 7, adapter="base")
    assert request.event.status is ReportStatus.PRELIMINARY and request.event.findings == item.findings
    assert request.route.name == "us_abdomen" and request.route.topic == "drafts.requests.us_abdomen"
    assert request.event.accession == "SYN-us_abdomen-000007"
