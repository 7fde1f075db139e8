"""HL7 v2 code tables the gateway decides on: result status, order status, error codes, charsets.

Stage: normalise (status, charset) and ACK building (error codes).
Input: codes as sent in OBX-11, OBR-25, ORC-5, MSH-18. Output: ``ReportStatus`` / Python codec names /
HL7 table 0357 codes. Failure modes: none; an unknown code maps to ``None`` and the caller falls back.
"""

from __future__ import annotations

from schemas.events import ReportStatus

S = ReportStatus

# HL7 table 0085 Observation result status (OBX-11). N ("not asked") maps to nothing.
OBSERVATION_RESULT_STATUS: dict[str, ReportStatus] = {
    "O": S.REGISTERED,  # order detail description only (no result)
    "I": S.IN_PROGRESS,  # specimen in lab; results pending
    "S": S.IN_PROGRESS,  # partial results
    "R": S.IN_PROGRESS,  # results entered, not verified
    "P": S.PRELIMINARY,  # preliminary results
    "F": S.FINAL,  # final results
    "U": S.FINAL,  # status changed to final without retransmitting results
    "C": S.AMENDED,  # record coming over is a correction and replaces a final result
    "D": S.CANCELLED,  # deletes the OBX record
    "W": S.CANCELLED,  # post original as wrong
    "X": S.CANCELLED,  # results cannot be obtained for this observation
}

# HL7 table 0123 Result status (OBR-25).
RESULT_STATUS: dict[str, ReportStatus] = {
    "O": S.REGISTERED,  # order received; specimen not yet received
    "S": S.IN_PROGRESS,  # procedure scheduled, but not done
    "I": S.IN_PROGRESS,  # specimen received, procedure incomplete
    "A": S.IN_PROGRESS,  # some, but not all, results available
    "R": S.IN_PROGRESS,  # results stored; not yet verified
    "P": S.PRELIMINARY,  # preliminary: a verified early result is available
    "F": S.FINAL,  # final results; results stored and verified
    "C": S.AMENDED,  # correction to results
    "X": S.CANCELLED,  # no results available; order cancelled
}

# HL7 table 0038 Order status (ORC-5).
ORDER_STATUS: dict[str, ReportStatus] = {
    "SC": S.REGISTERED,  # in process, scheduled
    "IP": S.IN_PROGRESS,  # in process, unspecified
    "HD": S.IN_PROGRESS,  # on hold
    "A": S.IN_PROGRESS,  # some, but not all, results available
    "CM": S.FINAL,  # order is completed
    "CA": S.CANCELLED,  # order was cancelled
    "DC": S.CANCELLED,  # order was discontinued
}

# A report is as signed as its most-signed OBX; a single deleted (D) OBX does not cancel the report.
STATUS_RANK: dict[ReportStatus, int] = {
    S.CANCELLED: 0,
    S.REGISTERED: 1,
    S.IN_PROGRESS: 2,
    S.PRELIMINARY: 3,
    S.FINAL: 4,
    S.AMENDED: 5,
}

# HL7 table 0211 Alternate character sets (MSH-18) → Python codec. Absent: UTF-8, else ISO-8859-1.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/5": "iso8859-5",
    "8859/7": "iso8859-7",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "GB18030": "gb18030",
    "BIG-5": "big5",
    "KS X 1001": "euc-kr",
    "ISO IR87": "iso2022_jp",
}

# HL7 table 0357 Message error condition codes (ERR-3 in v2.5+, ERR-1.4 before).
ERROR_CONDITION: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

# The one list of messages the gateway takes, MSH-9.1 message code → MSH-9.2 trigger events, read by
# both the ingest ACK (AR for anything else) and the normaliser. ORU^R01 is the unsolicited observation
# result (HL7 v2.5.1 §7.3.1). An empty MSH-9.2 (a bare "ORU", as some older interfaces send it) is
# taken as R01 rather than refused, so such a report is not lost to an AR.
ACCEPTED_MESSAGES: dict[str, frozenset[str]] = {"ORU": frozenset({"R01", ""})}

# Our error codes → (table 0357 code, segment, field) so the sender sees where it went wrong.
ERROR_LOCATION: dict[str, tuple[str, str, int]] = {
    "empty": ("100", "MSH", 0),
    "missing_msh": ("100", "MSH", 0),
    "bad_segment": ("100", "", 0),
    "bad_encoding_characters": ("102", "MSH", 2),
    "missing_msh_9": ("101", "MSH", 9),
    "missing_msh_10": ("101", "MSH", 10),
    "unsupported_message_type": ("200", "MSH", 9),
    "unsupported_event": ("201", "MSH", 9),
    "unsupported_version": ("203", "MSH", 12),
    "duplicate": ("205", "MSH", 10),
    "bad_encoding": ("102", "MSH", 18),
    "missing_obr": ("100", "OBR", 0),
    "missing_obx": ("100", "OBX", 0),  # raised by gateway/ingest.py check_structure
    "missing_accession": ("101", "OBR", 18),
    "missing_status": ("101", "OBX", 11),
    "no_report_text": ("101", "OBX", 5),
    "bad_status": ("103", "OBX", 11),
}


def charset_codec(msh_18: str) -> str:
    """The Python codec for MSH-18, "" when unknown or absent (the caller sniffs UTF-8 / Latin-1)."""
    return CHARSETS.get(msh_18.strip().upper(), "")
