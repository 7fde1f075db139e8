"""HL7 v2 at the hospital edge: read MSH fast, normalise ORU^R01 (one event per OBR group), build ACKs and drafts.

Nothing here returns an HL7 object: callers get ``MshInfo``, ``ReportEvent`` or bytes.
"""

from gateway.hl7.ack import build_ack
from gateway.hl7.er7 import Delimiters, escape, unescape
from gateway.hl7.msh import MshInfo, check_message_type, peek_msh
from gateway.hl7.normalise import normalise_hl7, normalise_oru
from gateway.hl7.outbound import build_draft_oru, provenance_note
from gateway.hl7.split import split_messages

__all__ = [
    "Delimiters",
    "MshInfo",
    "build_ack",
    "build_draft_oru",
    "check_message_type",
    "escape",
    "normalise_hl7",
    "normalise_oru",
    "peek_msh",
    "provenance_note",
    "split_messages",
    "unescape",
]
