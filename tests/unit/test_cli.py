"""The ``normalize`` command as an operator runs it: a real subprocess, JSON lines, exit codes,
never a traceback for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURES, REPO

SAMPLE = REPO / "cli" / "sample"


def normalize(*paths: Path) -> tuple[int, list[dict], str]:
    done = subprocess.run([sys.executable, "-m", "cli", "normalize", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_every_sample_normalises_and_exit_is_zero() -> None:
    code, lines, _ = normalize(*sorted(SAMPLE.iterdir()))
    assert code == 0
    assert len(lines) == 24 and all("error" not in line for line in lines)
    assert {line["source"] for line in lines} == {"hl7v2", "fhir"}
    assert {line["language"] for line in lines} == {"en", "zh"}
    prelim = {line["accession"]: line for line in lines if line["status"] == "preliminary"}
    assert (prelim["DEMO1005"]["modality"], prelim["DEMO1005"]["body_system"]) == ("PT", "whole_body")
    assert (prelim["DEMO1006"]["modality"], prelim["DEMO1006"]["body_system"]) == ("CT", "head")


def test_a_file_with_several_messages_gives_one_line_each(tmp_path: Path) -> None:
    batch = tmp_path / "batch.hl7"
    batch.write_bytes((SAMPLE / "01_ct_chest.prelim.hl7").read_bytes() + b"\n" + (SAMPLE / "02_xr_chest.prelim.hl7").read_bytes())
    code, lines, _ = normalize(batch)
    assert code == 0 and [line["accession"] for line in lines] == ["DEMO1001", "DEMO1002"]


def test_bad_input_is_an_error_line_and_exit_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty.hl7"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.hl7"
    garbage.write_bytes(b"\x00\x01\x02 not an HL7 message")
    missing = tmp_path / "missing.hl7"
    code, lines, stderr = normalize(empty, garbage, FIXTURES / "fhir" / "invalid_missing_status.json",
                                    missing, SAMPLE / "01_ct_chest.prelim.hl7")
    assert code == 1
    assert "Traceback" not in stderr
    errors = [line for line in lines if "error" in line]
    assert [Path(e["path"]).name for e in errors] == ["empty.hl7", "garbage.hl7", "invalid_missing_status.json", "missing.hl7"]
    assert all(e["error"]["code"] and e["error"]["reason"] for e in errors)
    assert "status" in errors[2]["error"]["reason"]
    assert lines[-1]["accession"] == "DEMO1001"  # good input after bad is still normalised
