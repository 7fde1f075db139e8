"""Backfill sources (gateway/backfill): files split into messages and resources with their offsets, normalised by the
live parsers; HL7 batch envelopes and their counts, MLLP frames, CR/CRLF/LF, NDJSON reports resolved across files,
bad lines rejected with a reason, resuming from an offset, the reference index kept between runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.backfill import BackfillReader, Unit, expand
from gateway.backfill.ndjson import SENDER
from gateway.backfill.reader import sniff
from gateway.backfill.resource_index import ResourceIndex
from gateway.fhir.inbound import parse_fhir
from gateway.hl7 import normalise_oru
from gateway.settings import GatewaySettings
from tests.conftest import REPO
from tests.harness.backfill_feed import Report, batch_file, mllp_file, ndjson, oru, reports

SETTINGS = GatewaySettings()
SAMPLE = REPO / "cli" / "sample"


@pytest.fixture(scope="module")
def feed() -> list[Report]:
    return reports(12)


def _units(tmp_path: Path, name: str, data: bytes, start: int = 0, *others: tuple[str, bytes]) -> list[Unit]:
    path = tmp_path / name
    path.write_bytes(data)
    for other, content in others:
        (tmp_path / other).write_bytes(content)
    files = [path, *(tmp_path / o for o, _ in others)]
    reader = BackfillReader(files, SETTINGS, tmp_path / ".index" / "references.sqlite")
    try:
        return list(reader.units(path, start))
    finally:
        reader.close()


def _event_ids(units: list[Unit]) -> list[str]:
    return [e.event_id for u in units for e in u.events]


def _expected(messages: list[bytes]) -> list[str]:
    return [e.event_id for m in messages for e in normalise_oru(m, settings=SETTINGS)]


@pytest.mark.parametrize("terminator", [b"\r", b"\r\n", b"\n"], ids=["CR", "CRLF", "LF"])
def test_a_batch_file_gives_each_message_once_and_nothing_for_its_envelope(
        tmp_path: Path, feed: list[Report], terminator: bytes) -> None:
    messages = [oru(r) for r in feed]
    units = _units(tmp_path, "day.hl7", batch_file(messages, batches=2, terminator=terminator))
    assert _event_ids(units) == _expected(messages)  # same ids as the live normaliser, whatever the terminator
    assert not [u for u in units if u.code or u.note]  # FHS/BHS/BTS/FTS are no messages and their counts agree
    assert [e.findings for u in units for e in u.events] == [r.findings for r in feed]


def test_batch_and_file_counts_that_disagree_are_noted_not_rejected(tmp_path: Path, feed: list[Report]) -> None:
    data = batch_file([oru(r) for r in feed[:3]]).replace(b"BTS|3", b"BTS|4").replace(b"FTS|1", b"FTS|2")
    units = _units(tmp_path, "short.hl7", data)
    assert [u.note for u in units if u.note] == ["bts_count_mismatch", "fts_count_mismatch"]
    assert "BTS-1 says 4 messages" in next(u.reason for u in units if u.note == "bts_count_mismatch")
    assert len(_event_ids(units)) == 3 and not any(u.code for u in units)


def test_a_file_of_mllp_frames_and_concatenated_messages(tmp_path: Path, feed: list[Report]) -> None:
    messages = [oru(r) for r in feed[:4]]
    assert _event_ids(_units(tmp_path, "frames.bin", mllp_file(messages))) == _expected(messages)
    assert _event_ids(_units(tmp_path, "plain.hl7", b"\n".join(messages))) == _expected(messages)


def test_bytes_outside_any_message_are_rejected_with_a_reason(tmp_path: Path, feed: list[Report]) -> None:
    framed = mllp_file([oru(feed[0])]) + b"garbage between frames\r" + mllp_file([oru(feed[1])])
    units = _units(tmp_path, "noisy.hl7", framed)
    assert [u.code for u in units if u.code] == ["not_hl7"]
    assert len(_event_ids(units)) == 2
    batch = b"FHS|^~\\&|RIS\rXYZ|stray segment\rBHS|^~\\&|RIS\r" + oru(feed[0]) + b"BTS|1\rFTS|1\r"
    units = _units(tmp_path, "stray.hl7", batch)
    assert [u.code for u in units if u.code] == ["not_hl7"] and len(_event_ids(units)) == 1


def test_one_message_per_file_as_the_sample_ships_them(tmp_path: Path) -> None:
    for path in sorted(SAMPLE.glob("*.final.hl7")):
        units = _units(tmp_path, path.name, path.read_bytes())
        assert _event_ids(units) == _expected([path.read_bytes()]), path.name


def test_each_rejected_message_says_why_and_the_rest_go_on(tmp_path: Path, feed: list[Report]) -> None:
    no_obr = b"MSH|^~\\&|RIS|BFHOSP|GW|RAD|20240101||ORU^R01^ORU_R01|BAD1|P|2.5.1\rPID|1||X\r"
    adt = b"MSH|^~\\&|RIS|BFHOSP|GW|RAD|20240101||ADT^A01^ADT_A01|ADT1|P|2.5.1\rPID|1||X\r"
    units = _units(tmp_path, "mixed.hl7", batch_file([oru(feed[0]), no_obr, adt, oru(feed[1])]))
    codes = [(u.code, u.control_id, u.skipped) for u in units if u.code]
    assert codes == [("missing_obr", "BAD1", False), ("unsupported_message_type", "ADT1", True)]
    assert len(_event_ids(units)) == 2


def test_a_message_over_the_size_limit_is_rejected_by_control_id(tmp_path: Path, feed: list[Report]) -> None:
    path = tmp_path / "big.hl7"
    path.write_bytes(oru(feed[0]))
    reader = BackfillReader([path], GatewaySettings(max_message_bytes=200), tmp_path / "idx.sqlite")
    [unit] = list(reader.units(path))
    assert (unit.code, unit.control_id) == ("message_too_large", feed[0].control_id)


def test_reading_from_a_unit_end_resumes_exactly_after_it(tmp_path: Path, feed: list[Report]) -> None:
    for name, data in (("b.hl7", batch_file([oru(r) for r in feed], terminator=b"\r\n")),
                       ("f.hl7", mllp_file([oru(r) for r in feed])), ("DiagnosticReport.ndjson", ndjson(feed)[0])):
        others = (("Observation.ndjson", ndjson(feed)[1]),)
        whole = _units(tmp_path, name, data, 0, *others)
        cut = [u for u in whole if u.events][4].end
        rest = _units(tmp_path, name, data, cut, *others)
        assert _event_ids(rest) == _event_ids([u for u in whole if u.end > cut]), name
        assert rest[-1].end == len(data)


def _bundle_event(report_line: bytes, observation_line: bytes) -> dict[str, object]:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": json.loads(report_line)}, {"resource": json.loads(observation_line)}]}
    [event] = parse_fhir(json.dumps(bundle).encode(), settings=SETTINGS, sender=SENDER)
    return event.model_dump(exclude={"received_at"})


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_ndjson_reports_read_their_observations_from_another_file(
        tmp_path: Path, feed: list[Report], newline: bytes) -> None:
    reports_ndjson, observations = ndjson(feed, newline=newline)
    units = _units(tmp_path, "DiagnosticReport.ndjson", reports_ndjson, 0,
                   ("Observation.000.ndjson", observations))
    events = [e for u in units for e in u.events]
    assert [e.findings for e in events] == [r.findings for r in feed]  # the text is in the Observations only
    assert [e.accession for e in events] == [r.accession for r in feed] and not any(u.code for u in units)
    lines = list(zip(reports_ndjson.splitlines(), observations.splitlines(), strict=True))
    assert [e.model_dump(exclude={"received_at"}) for e in events] == [_bundle_event(*p) for p in lines]


def test_ndjson_reports_with_contained_observations_or_a_presented_form(tmp_path: Path) -> None:
    fixtures = REPO / "tests" / "fixtures" / "fhir"
    names = ("dr_contained_observation.json", "dr_presented_form.json", "dr_final.json",
             "dr_chinese_presented_form.json")
    resources = [json.loads((fixtures / n).read_bytes()) for n in names]
    lines = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in resources)
    events = [e for u in _units(tmp_path, "DiagnosticReport.ndjson", lines) for e in u.events]
    expected = [e for n in names for e in parse_fhir((fixtures / n).read_bytes(), settings=SETTINGS, sender=SENDER)]
    assert [e.model_dump(exclude={"received_at"}) for e in events] == [
        e.model_dump(exclude={"received_at"}) for e in expected]
    assert all(e.findings or e.impression for e in events)


def test_the_observation_file_itself_stores_nothing(tmp_path: Path, feed: list[Report]) -> None:
    reports_ndjson, observations = ndjson(feed[:2])
    units = _units(tmp_path, "Observation.ndjson", observations, 0, ("DiagnosticReport.ndjson", reports_ndjson))
    assert units == [Unit(len(observations))]


def test_bad_ndjson_lines_are_rejected_each_with_its_reason(tmp_path: Path, feed: list[Report]) -> None:
    reports_ndjson, observations = ndjson(feed[:3])
    good = reports_ndjson.splitlines()
    orphan = json.loads(good[2])
    orphan["result"] = [{"reference": "Observation/not-exported"}]
    lines = [good[0], b"{not json", observations.splitlines()[0], json.dumps(orphan).encode(), b"", good[1]]
    units = _units(tmp_path, "DiagnosticReport.ndjson", b"\n".join(lines) + b"\n", 0,
                   ("Observation.ndjson", observations))
    assert [u.code for u in units] == ["", "ndjson_bad_line", "ndjson_mixed_types", "fhir_unresolved_result", ""]
    assert "Observation/not-exported" in units[3].reason and units[3].control_id == "dr-2"
    assert "byte" in units[1].reason and len(_event_ids(units)) == 2


def test_ndjson_of_another_resource_type_is_skipped_not_rejected(tmp_path: Path) -> None:
    encounters = b'{"resourceType":"Encounter","id":"e1","status":"finished"}\n' * 2
    [unit] = _units(tmp_path, "Encounter.ndjson", encounters)
    assert unit.code == "ndjson_other_type" and unit.skipped and unit.end == len(encounters)


def test_the_reference_index_is_kept_and_rebuilt_only_for_changed_files(tmp_path: Path, feed: list[Report]) -> None:
    observations = tmp_path / "Observation.ndjson"
    observations.write_bytes(ndjson(feed[:2])[1])
    index = ResourceIndex(tmp_path / "idx.sqlite")
    assert index.ensure([observations]) == 1
    assert json.loads(index.lookup(["Observation/findings-1"])["Observation/findings-1"])["id"] == "findings-1"
    index.close()
    index = ResourceIndex(tmp_path / "idx.sqlite")
    assert index.ensure([observations]) == 0  # a resumed run finds it built
    observations.write_bytes(ndjson(feed[5:6])[1])
    assert index.ensure([observations]) == 1
    assert set(index.lookup(["Observation/findings-1", "Observation/findings-5"])) == {"Observation/findings-5"}
    index.close()


def test_kinds_and_what_a_directory_walk_leaves_out(tmp_path: Path, feed: list[Report]) -> None:
    reports_ndjson, observations = ndjson(feed[:2])
    files = {"a.hl7": batch_file([oru(feed[0])]), "b.txt": mllp_file([oru(feed[1])]), "c.json":
             (SAMPLE / "05_pet_ct.final.json").read_bytes(), "export/DiagnosticReport.ndjson": reports_ndjson,
             "export/Observation.ndjson": observations, "README.md": b"# notes\n", "manifest.json": b'{"output": []}',
             ".hidden/x.hl7": oru(feed[2]), "noext": reports_ndjson}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    found, left_out = expand([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.hl7", "b.txt", "c.json", "export/DiagnosticReport.ndjson", "export/Observation.ndjson", "noext"]
    assert left_out == 2  # README.md, manifest.json (the hidden folder is not looked at)
    assert expand([tmp_path / "a.hl7", tmp_path])[0].count(tmp_path / "a.hl7") == 1  # named twice, read once
    assert [sniff(tmp_path / n) for n in ("a.hl7", "b.txt", "c.json", "noext", "README.md")] == [
        "hl7", "hl7", "json", "ndjson", ""]
    [unit] = _units(tmp_path, "c.json", files["c.json"])
    assert [e.event_id for e in unit.events] == [e.event_id for e in parse_fhir(files["c.json"], settings=SETTINGS)]


def test_a_named_file_that_is_no_report_is_rejected_once(tmp_path: Path) -> None:
    [unit] = _units(tmp_path, "notes.txt", b"just some words\n")
    assert (unit.code, unit.end) == ("not_a_report_file", 16)
