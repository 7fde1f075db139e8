"""The export: a real SQLite store filled through ``capture_final``, de-identified chat JSONL, patient
splits, filters, reproducible manifest hashes, the PHI check (in-process and through the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.hl7 import normalise_hl7
from gateway.settings import GatewaySettings
from ops.capture import capture_final
from ops.export.deid import phi_matcher, scrub
from ops.export.manifest import ExportArgs
from ops.export.run import ExportError, check_export, run_export
from ops.export.scan import record_ref
from ops.export.split import patient_key, split_of
from ops.store import Store
from schemas import DraftImpression, ReportEvent, ReportStatus, Source
from schemas.events import BodySystem, Modality
from tests.conftest import FIXTURES, REPO

FAMILIES = ["Whitacre", "Oduya", "Castellano", "Brennick", "Lindqvist", "Marchetti", "Okonkwo", "Pellegrino"]
WORDS = ["apical", "basal", "hilar", "subpleural", "perifissural", "lingular", "paratracheal", "retrocardiac",
         "calcified", "ground-glass", "spiculated", "lobulated", "cavitary", "tree-in-bud", "reticular"]
FINDINGS = ["Small right pleural effusion {n} mm.", "Left lower lobe nodule measuring {n} mm.",
            "Mild cardiomegaly, heart width {n} cm.", "Linear atelectasis at the right base, {n} cm long."]


def patient_phi(i: int) -> tuple[str, list[str]]:
    mrn, family, given = f"MRN7{i:05d}", FAMILIES[i % len(FAMILIES)], "Quintessa"
    phone = f"617-555-{1000 + i:04d}"
    return mrn, [mrn, family, given, f"{given} {family}", "19610203", "1961-02-03", phone, f"q{i}@mail.example",
                 f"{40 + i} Juniper Street", "Brookfield"]


def report(i: int, patient: int, status: ReportStatus, *, findings: str, impression: str = "") -> ReportEvent:
    mrn, phi = patient_phi(patient)
    acc = f"ACC9{i:05d}"
    return ReportEvent(event_id=f"e-{i}-{status.value}", source=Source.HL7V2, message_control_id=f"m{i}{status.value}",
                       accession=acc, patient_id=mrn, site="GENHOSP" if i % 3 else "EASTCLINIC",
                       modality=Modality.CT, body_system=BodySystem.CHEST, procedure_text="CT THORAX", status=status,
                       findings=findings, impression=impression, phi=[acc, *phi])


def capture(store: Store, i: int, patient: int, findings: str, final: str, draft_text: str | None = None) -> None:
    draft = None
    if draft_text is not None:
        prelim = report(i, patient, ReportStatus.PRELIMINARY, findings=findings)
        draft = DraftImpression(event_id=prelim.event_id, accession=prelim.accession, route="ct_chest", text=draft_text,
                                adapter_name="ct_chest", adapter_version="v1", prompt_version="impression_v1",
                                model="ct_chest", event=prelim)
    store.save_edit(capture_final(report(i, patient, ReportStatus.FINAL, findings=findings, impression=final), draft))


def fill(store: Store, start: int = 0, count: int = 40) -> None:
    for i in range(start, start + count):
        patient = i // 2  # two studies per patient
        _, phi = patient_phi(patient)
        a, b, c = (WORDS[(i * k) % len(WORDS)] for k in (1, 2, 7))
        findings = (FINDINGS[i % 4].format(n=i + 3) + f" {a.capitalize()} {b} opacity. Discussed with patient "
                    f"{phi[3]} on 2024-03-0{1 + i % 9}.")
        final = f"{c.capitalize()} {a} change ({i} mm): follow-up advised for {phi[1]} (MRN {phi[0]}, tel {phi[6]})."
        capture(store, i, patient, findings, final, draft_text=f"Finding {i}." if i % 2 else None)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(f"sqlite:///{tmp_path / 'store.db'}").create()
    fill(opened)
    # one record for each quality filter, and two duplicates
    capture(opened, 900, 900, "", "Normal.")
    capture(opened, 901, 901, "Lungs are clear and there is no effusion.", "Ok")
    capture(opened, 902, 902, "Lungs are clear.", "x" * 5000)
    capture(opened, 903, 903, "No acute cardiopulmonary abnormality.", "No acute cardiopulmonary abnormality.")
    capture(opened, 904, 904, FINDINGS[0].format(n=3) + " Extra.", "Finding number zero, effusion.")
    capture(opened, 905, 905, FINDINGS[0].format(n=3) + " Extra.", "Finding number zero, effusion.")
    capture(opened, 906, 906, FINDINGS[0].format(n=3) + " Extra.", "Finding number zero, effusion!")
    capture(opened, 907, 907, FINDINGS[0].format(n=3) + " Extra.", "Finding number zero, effusions.")
    yield opened
    opened.close()


def lines(root: Path, pattern: str = "*/*.jsonl") -> list[tuple[Path, dict[str, object]]]:
    return [(p, json.loads(line)) for p in sorted(root.glob(pattern)) for line in p.read_text().splitlines()]


def test_export_splits_by_patient_filters_and_is_deidentified(store: Store, tmp_path: Path) -> None:
    result = run_export(store, tmp_path / "out", ExportArgs())
    assert result.manifest is not None and not result.findings
    counts = result.manifest["counts"]
    assert counts["removed"] == {"not_final": 0, "empty": 1, "too_short": 1, "too_long": 1,
                                 "copied_from_findings": 1, "exact_duplicate": 2, "near_duplicate": 1}
    assert counts["read"] == 48 and counts["kept"] == 41 and sum(counts["by_split"].values()) == 41
    assert counts["by_site"] == {"EASTCLINIC": 14, "GENHOSP": 27} and counts["by_language"] == {"en": 41}
    text = "".join(p.read_text() for p in (tmp_path / "out").rglob("*.jsonl"))
    for patient in range(20):
        mrn, phi = patient_phi(patient)
        assert not any(value.lower() in text.lower() for value in phi if len(value) > 4), patient
    assert "2024-03-0" not in text and "[DATE]" in text and "[NAME]" in text and "[PHONE]" in text
    rows = lines(tmp_path / "out", "ct_chest/[tv]*[!s].jsonl")
    assert all([m["role"] for m in row["messages"]] == ["system", "user", "assistant"] for _, row in rows)
    assert "EXAM: CT THORAX" in rows[0][1]["messages"][1]["content"]
    prefs = lines(tmp_path / "out", "*/*.preferences.jsonl")
    assert prefs and all({"findings", "prompt", "chosen", "rejected", "ref"} <= set(row) for _, row in prefs)
    assert sum(result.manifest["counts"]["preferences_by_split"].values()) == len(prefs) == 20


def test_no_patient_spans_two_splits_and_splits_are_stable(store: Store, tmp_path: Path) -> None:
    first = run_export(store, tmp_path / "a", ExportArgs()).manifest
    split_by_ref = {row["ref"]: p.stem for p, row in lines(tmp_path / "a", "*/*[!s].jsonl")}
    fill(store, start=40, count=20)  # more records (and patients) later
    second = run_export(store, tmp_path / "b", ExportArgs()).manifest
    assert first and second and second["counts"]["kept"] > first["counts"]["kept"]
    again = {row["ref"]: p.stem for p, row in lines(tmp_path / "b", "*/*[!s].jsonl")}
    assert all(again[ref] == split for ref, split in split_by_ref.items())
    by_patient: dict[str, set[str]] = {}
    for record in store.iter_edit_records():
        by_patient.setdefault(record.patient_id, set()).add(split_of(patient_key(record.patient_id, record.accession)))
    assert all(len(splits) == 1 for splits in by_patient.values())
    assert {split_of(f"patient:{n}") for n in range(200)} == {"train", "validation", "test"}


def test_manifest_hashes_are_reproducible(store: Store, tmp_path: Path) -> None:
    one = run_export(store, tmp_path / "one", ExportArgs()).manifest
    two = run_export(store, tmp_path / "two", ExportArgs()).manifest
    assert one and two and one["files"] == two["files"] and one["export_id"] == two["export_id"]
    assert (tmp_path / "one" / "manifest.json").read_bytes() == (tmp_path / "two" / "manifest.json").read_bytes()
    assert [v.split("@")[0] for v in one["prompt_versions"]] == ["impression_v1"] and one["schema_version"] >= 1


def test_planted_pid_value_fails_the_check(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_export(store, out, ExportArgs()).manifest
    assert check_export(store, out)[0] == []
    path, row = lines(out, "*/train.jsonl")[0]
    record = next(r for r in store.iter_edit_records() if record_ref(r.record_id) == row["ref"])
    planted = dict(row, messages=[*row["messages"][:-1], {"role": "assistant", "content": f"See {record.phi[1]}."}])
    content = path.read_text().splitlines()
    path.write_text("\n".join([json.dumps(planted), *content[1:]]) + "\n")
    findings, _ = check_export(store, out)
    assert [(f.path, f.line) for f in findings] == [(path.relative_to(out).as_posix(), 1)]
    assert record.phi[1] not in str(findings[0])


def test_chinese_deidentification() -> None:
    phi = ["ZY2024000123", "王建国", "13812345678", "北京市海淀区中关村大街27号"]
    text = ("患者王建国先生，病历号：ZY2024000123，2024年3月5日行胸部CT，电话138 1234 5678，"
            "住址北京市海淀区中关村大街27号。与2023年12月1日片比较，右肺结节增大，已告知李医生。额区未见异常，胆道扩张。")
    counts: Counter[str] = Counter()
    out = scrub(text, phi_matcher(phi), counts)
    for value in ("王建国", "ZY2024000123", "2024年3月5日", "2023年12月1日", "138 1234 5678", "中关村", "李医生"):
        assert value not in out
    assert "额区未见异常，胆道扩张" in out and "右肺结节增大" in out  # anatomy survives
    assert counts["[DATE]"] == 2 and counts["[NAME]"] >= 2


def test_english_patterns_keep_measurements() -> None:
    text = ("Compared with 03/05/2024 and March 5, 2024. Call Dr. Alvarez at (617) 555-0199 or a@b.org. "
            "Accession: RX20240012. L4-5 disc; 12.5-13.0 cm mass; ratio 1/2; SUVmax 6.2.")
    out = scrub(text, phi_matcher([]))
    assert "L4-5 disc; 12.5-13.0 cm mass; ratio 1/2; SUVmax 6.2." in out
    assert all(v not in out for v in ("03/05/2024", "March 5", "Alvarez", "555-0199", "a@b.org", "RX20240012"))


def test_hl7_normaliser_fills_phi_from_pid() -> None:
    event = normalise_hl7((FIXTURES / "hl7" / "separate_obx_loinc.hl7").read_bytes(), settings=GatewaySettings())
    assert {"MRN00001", "TESTPATIENT", "ALPHA", "ALPHA TESTPATIENT", "19700101", "ACC1001", "PLC1001"} <= set(event.phi)
    assert capture_final(event.model_copy(update={"status": ReportStatus.FINAL}), None).phi == event.phi


def test_cli_export_and_check(store: Store, tmp_path: Path) -> None:
    url, out = store.url, tmp_path / "cli"
    run = [sys.executable, "-m", "cli", "export"]
    made = subprocess.run([*run, "--out", str(out), "--database-url", url, "--route", "ct_chest"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout.strip().splitlines()[-1])
    assert summary["kept"] == 41 and (out / "manifest.json").exists()
    ok = subprocess.run([*run, "check", str(out), "--database-url", url], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["passed"], ok.stderr
    path = sorted(out.glob("ct_chest/*.jsonl"))[0]
    content = path.read_text().splitlines()
    row = json.loads(content[1])
    row["messages"][-1]["content"] += " Compare MRN700003."  # another patient's id (the ids check catches it)
    path.write_text("\n".join([content[0], json.dumps(row), *content[2:]]) + "\n")
    bad = subprocess.run([*run, "--database-url", url, "check", str(out)], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1 and f"{path.relative_to(out).as_posix()} line 2" in bad.stderr
    assert "MRN700003" not in bad.stderr + bad.stdout


def test_export_refuses_a_non_empty_directory(store: Store, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ExportError):
        run_export(store, tmp_path / "full", ExportArgs())
