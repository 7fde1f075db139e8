"""Site- and modality-aware prompting (model/inference/prompts.py, styles.py, site_styles.toml): the same findings at
two sites give two prompts, each with its site's style block; a site the styles file does not name gets the default;
``prompt_version`` (template @ digest of template text + style) changes with either and is stable otherwise.

The packaged prompts are compared with a golden (``tests/fixtures/prompts/site_prompts.json``); regenerate after a
deliberate change of a template or of ``site_styles.toml`` with ``IG_UPDATE_GOLDEN=1 pytest
tests/unit/test_site_prompts.py`` and read the diff by eye: it is what the adapters will see.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from model.inference.prompts import PROMPTS_DIR, PromptSet, default_prompts, prompt_language, render_messages
from model.inference.routing import RoutingTable
from model.inference.styles import MAX_STYLE_CHARS, SiteStyles
from ops.retrain.evaluate import EvalRow, score_groups
from ops.retrain.heldout import heldout_rows
from schemas import BodySystem, InferenceRequest, Modality, ReportEvent, ReportStatus, RouteSpec, Source
from schemas.events import DraftImpression

GOLDEN = Path(__file__).parents[1] / "fixtures" / "prompts" / "site_prompts.json"
FINDINGS = {"en": "There is a 6 mm nodule in the right upper lobe. No pleural effusion.",
            "zh": "右肺上叶见一约6mm结节。双侧胸腔未见积液。"}
CASES = [  # (site, language, modality, body system, procedure)
    ("GENHOSP", "en", Modality.CT, BodySystem.CHEST, "CT CHEST WITHOUT CONTRAST"),
    ("SITE_A", "en", Modality.CT, BodySystem.CHEST, "CT CHEST WITHOUT CONTRAST"),
    ("SITE_B", "en", Modality.CT, BodySystem.CHEST, "CT CHEST WITHOUT CONTRAST"),
    ("SITE_B", "zh", Modality.CT, BodySystem.CHEST, "胸部CT平扫"),
    ("SITE_A", "en", Modality.MR, BodySystem.HEAD, ""),
]


def request(site: str, language: str = "en", modality: Modality = Modality.CT, body: BodySystem = BodySystem.CHEST,
            procedure: str = "CT CHEST WITHOUT CONTRAST", template: str = "impression_v1") -> InferenceRequest:
    event = ReportEvent(event_id=f"e-{site}", source=Source.HL7V2, message_control_id="1", accession="A1", site=site,
                        modality=modality, body_system=body, procedure_text=procedure, findings=FINDINGS[language],
                        status=ReportStatus.PRELIMINARY, language=language)
    return InferenceRequest(event=event, route=RouteSpec(name="ct_chest", adapter="ct_chest", prompt_template=template,
                                                         topic="drafts.requests.ct_chest"))


def styles_file(tmp_path: Path, body: str) -> SiteStyles:
    path = tmp_path / "site_styles.toml"
    path.write_text(body, encoding="utf-8")
    return SiteStyles.load(path)


def test_packaged_prompts_match_the_golden() -> None:
    rendered = []
    for site, language, modality, body, procedure in CASES:
        messages, version = render_messages(request(site, language, modality, body, procedure))
        rendered.append({"site": site, "language": language, "modality": modality.value, "body_system": body.value,
                         "messages": messages, "prompt_version": version})
    if os.environ.get("IG_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(rendered, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert rendered == json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_same_findings_at_two_sites_give_two_prompts_with_their_styles() -> None:
    styles = default_prompts().styles
    (a_messages, a_version), (b_messages, b_version) = render_messages(request("SITE_A")), render_messages(request("SITE_B"))
    assert styles.for_site("SITE_A").text("en") in a_messages[0]["content"]
    assert styles.for_site("SITE_B").text("en") in b_messages[0]["content"]
    assert styles.for_site("SITE_B").text("en") not in a_messages[0]["content"]
    assert a_messages[1] == b_messages[1]  # the findings part is the same; only the site's style differs
    assert a_version != b_version and a_version.split("@")[0] == b_version.split("@")[0] == "impression_v1"


def test_a_site_without_a_style_gets_the_default() -> None:
    unnamed, version = render_messages(request("NOWHERE"))
    assert "NOWHERE" not in default_prompts().styles.sites
    assert (unnamed, version) == render_messages(request("GENHOSP")) == render_messages(request(""))
    assert unnamed[0]["content"] == "You are a radiologist. Write the IMPRESSION for these FINDINGS."  # no style block


def test_a_style_per_language_and_the_site_language_when_the_event_has_none(tmp_path: Path) -> None:
    styles = styles_file(tmp_path, '[default]\nstyle = ""\n[sites.X]\nlanguage = "zh"\nstyle = { zh = "逐条编号。" }\n')
    prompts = PromptSet(PROMPTS_DIR, styles)
    zh, _ = prompts.render(request("X", "zh", procedure="胸部CT平扫"))
    assert zh[0]["content"].endswith("书写要求：逐条编号。")
    en, _ = prompts.render(request("X", "en"))  # no English style at X: none
    assert en[0]["content"] == "You are a radiologist. Write the IMPRESSION for these FINDINGS."
    event = request("X").event
    assert prompt_language(event.model_copy(update={"language": ""}), styles.for_site("X").language) == "zh"
    assert prompt_language(event, styles.for_site("X").language) == "en"  # a tag on the event wins
    assert styles.for_site("Y").language == "en"  # [default]'s


def test_prompt_version_is_stable_and_changes_with_template_or_style(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(PROMPTS_DIR, templates)
    base = styles_file(tmp_path, '[sites.S]\nstyle = "Be brief."\n')
    _, first = PromptSet(templates, base).render(request("S"))
    _, again = PromptSet(templates, base).render(request("S"))  # reloaded from the same files
    other_findings = request("S").model_copy(update={"event": request("S").event.model_copy(update={"findings": "x"})})
    assert first == again == PromptSet(templates, base).render(other_findings)[1]
    restyled = styles_file(tmp_path, '[sites.S]\nstyle = "Be very brief."\n')
    _, by_style = PromptSet(templates, restyled).render(request("S"))
    path = templates / "impression_v1.j2"
    path.write_text(path.read_text(encoding="utf-8").replace("Write the IMPRESSION", "Write the impression"), "utf-8")
    _, by_template = PromptSet(templates, base).render(request("S"))
    assert len({first, by_style, by_template}) == 3 and all(v.startswith("impression_v1@") for v in (by_style, by_template))


def test_a_recorded_prompt_version_renders_with_its_template() -> None:
    messages, version = render_messages(request("SITE_A"))
    assert render_messages(request("SITE_A", template=version)) == (messages, version)  # how an export rebuilds it


@pytest.mark.parametrize("body", [
    '[sites.X]\ncolour = "red"\n',                       # unknown key
    '[sites.X]\nlanguage = "english"\n',                 # not a primary language tag
    '[sites.X]\nstyle = 3\n',                            # not text
    '[sites.X]\nstyle = { english = "x" }\n',            # bad language key
    f'[sites.X]\nstyle = "{"x" * (MAX_STYLE_CHARS + 1)}"\n',
    '[other]\nstyle = "x"\n',                            # unknown table
    '[sites.X\n',                                         # not TOML
])
def test_malformed_styles_fail_at_load(tmp_path: Path, body: str) -> None:
    with pytest.raises(ValueError, match="site styles"):
        styles_file(tmp_path, body)


def test_a_template_that_does_not_compile_fails_at_load(tmp_path: Path) -> None:
    (tmp_path / "broken.j2").write_text("{% if %}", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.j2"):
        PromptSet(tmp_path, SiteStyles())


def test_a_route_naming_no_template_fails_at_load(tmp_path: Path) -> None:
    table = tmp_path / "routes.toml"
    table.write_text('default = { name = "general", adapter = "base", prompt = "impression_v1" }\n'
                     '[[route]]\nname = "ct_chest"\nmodality = ["CT"]\nprompt = "impression_v9"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="impression_v9"):
        RoutingTable.load(table)


def test_an_exported_line_of_a_styled_site_rebuilds_at_its_site(tmp_path: Path) -> None:
    """Retrain evaluation rebuilds each held-out prompt exactly; a site's style block is in it, so the line's site is."""
    lines = []
    for site in ("SITE_A", "GENHOSP"):
        messages, _ = render_messages(request(site))
        lines.append({"messages": [*messages, {"role": "assistant", "content": "No acute finding."}], "site": site})
    unsited = {"messages": lines[0]["messages"]}  # a line from before the site was exported: cannot be rebuilt
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in [*lines, unsited]), encoding="utf-8")
    rows, requests, skipped = heldout_rows(path, "ct_chest")
    assert [r.event.site for r in requests] == ["SITE_A", "GENHOSP"] and skipped == 1
    assert [render_messages(r)[0] for r in requests] == [line["messages"][:-1] for line in lines]


def test_evaluation_is_cut_by_site() -> None:
    rows, drafts = [], []
    for index, (site, text) in enumerate([("SITE_A", "1. Right upper lobe nodule."), ("SITE_A", "1. Right upper lobe nodule."),
                                          ("SITE_B", "No pleural effusion.")]):
        event = request(site).event
        rows.append(EvalRow(index, event.findings, "1. Right upper lobe nodule.", event))
        drafts.append(DraftImpression(event_id=event.event_id, accession="A1", site=site, route="ct_chest", text=text,
                                      adapter_name="ct_chest", model="ct_chest", event=event))
    overall, groups = score_groups(rows, drafts)
    assert overall["n"] == 3 and {k: v["n"] for k, v in groups["site"].items()} == {"SITE_A": 2, "SITE_B": 1}
    assert groups["site"]["SITE_A"]["rougeL"] == pytest.approx(1.0) and groups["site"]["SITE_B"]["rougeL"] < 0.5
    assert list(groups["route"]) == ["ct_chest"]
