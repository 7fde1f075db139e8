"""HL7 v2 code tables the gateway decides on in code: accepted messages, error codes, charsets.

Stage: ingest, normalise (charset) and ACK building (error codes). Input: MSH-9, MSH-18, our error codes.
Output: Python codec names / HL7 table 0357 codes. Failure modes: none; an unknown charset maps to "".
Result status tables are data: gateway/data/status.toml, read by gateway/hl7/status.py.
"""

from __future__ import annotations

# HL7 table 0211 Alternate character sets (MSH-18) → Python codec, plus the spellings senders use instead
# (DICOM "ISO_IR 100"/"ISO_IR 192", "UTF8", "ISO-8859-1"). What the bytes really are is decided by evidence
# (gateway/hl7/charset.py): MSH-18 is often wrong.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "US-ASCII": "ascii",
    "ISO-8859-1": "latin-1",
    "ISO8859-1": "latin-1",
    "ISO_8859-1": "latin-1",
    "ISO_IR 100": "latin-1",
    "LATIN1": "latin-1",
    "LATIN-1": "latin-1",
    "WINDOWS-1252": "cp1252",
    "CP1252": "cp1252",
    "UNICODE": "utf-8",
    "UTF8": "utf-8",
    "ISO_IR 192": "utf-8",
    "GBK": "gb18030",
    "GB2312": "gb18030",
    "CP936": "gb18030",
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
    # MLLP sender allow-list (gateway/mllp_senders.py): table 0357 has no code for "not authorised"; 207 is its
    # catch-all ("not explicitly covered by other codes"), ERR-5 names the reason, ERR-2 the field (MSH-3 / MSH-4).
    "sender_not_allowed": ("207", "MSH", 3),
    "facility_not_allowed": ("207", "MSH", 4),
}


def charset_codec(msh_18: str) -> str:
    """The Python codec for MSH-18, "" when unknown or absent (the caller sniffs UTF-8 / Latin-1)."""
    return CHARSETS.get(msh_18.strip().upper(), "")
