"""The hl7apy STRICT helper (tests/harness/hl7_strict.py) itself: it passes valid messages, finds what is wrong in
invalid ones (all of it, not only the first), reads MSH-18, and names pre-v2.3.1 ACK structures as the standard does."""

from __future__ import annotations

import pytest

from tests.harness.hl7_strict import assert_strict, strict_check

ORU = (
    "MSH|^~\\&|IG|GW|RIS|H|20240315110000||ORU^R01^ORU_R01|C1|P|2.5.1\r"
    "PID|1||MRN1||^^^^^^U\r"
    "ORC|RE|PL1|FI1\r"
    "OBR|1|PL1|FI1|CTCHEST^CT CHEST|||20240315091500||||||||||||ACC1||||20240315110000|||P\r"
    "OBX|1|TX|19005-8^Impression^LN||No acute abnormality.||||||P\r"
)


def test_a_valid_oru_passes() -> None:
    result = assert_strict(ORU)
    assert result.ok and result.errors == []


def test_bytes_lf_separators_and_a_trailing_cr_are_read_alike() -> None:
    assert strict_check(ORU.encode()).ok and strict_check(ORU.replace("\r", "\n")).ok


def test_missing_required_fields_are_all_reported() -> None:
    result = strict_check(ORU.replace("PID|1||MRN1||^^^^^^U", "PID|1"))
    assert not result.ok
    assert any("PID_3" in e for e in result.errors) and any("PID_5" in e for e in result.errors)
    with pytest.raises(AssertionError, match="PID_5"):
        assert_strict(ORU.replace("||^^^^^^U", ""))


@pytest.mark.parametrize("bad", [
    ORU.replace("OBR|1", "ZZZ|1|x\rOBR|1"),                     # a segment the structure does not have
    ORU.replace("ORC|RE|PL1|FI1\r", "") + "ORC|RE|PL1|FI1\r",  # ORC after OBX: out of group order
    ORU.replace("PID|1||MRN1||^^^^^^U\r", "") + "PID|1||MRN1||^^^^^^U\r",  # PID last
])
def test_segment_order_and_unknown_segments_fail(bad: str) -> None:
    assert not strict_check(bad).ok


def test_a_table_value_is_a_warning_not_an_error() -> None:
    result = strict_check(ORU.replace("||||||P\r", "||||||Q\r", 1))  # OBX-11 Q: not in table 0085
    assert result.ok and any("HL70085" in w for w in result.warnings)


@pytest.mark.parametrize("version", ["2.2", "2.3"])
def test_ack_before_msh_9_3_is_read_as_the_ack_structure(version: str) -> None:
    ack = f"MSH|^~\\&|IG|GW|RIS|H|20240315110000||ACK^R01|A1|P|{version}\rMSA|AA|C1\r"
    assert_strict(ack)
    assert not strict_check(ack.replace("MSA|AA|C1\r", "")).ok  # MSA is still required


def test_msh_18_decides_how_bytes_are_decoded() -> None:
    ack = "MSH|^~\\&|IG|GW|RIS|H|20240315110000||ACK^R01^ACK|A1|P|2.5.1||||||8859/1\rMSA|AE|C1\r"
    text = ack + "ERR||OBX^1^11|103^Table value not found^HL70357|E|bad_status|||Statut inconnu: é\r"
    assert strict_check(text.encode("latin-1")).ok


def test_an_unknown_version_is_an_error() -> None:
    assert not strict_check(ORU.replace("|2.5.1", "|9.9")).ok
