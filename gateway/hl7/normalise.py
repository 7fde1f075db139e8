"""Normalise one HL7 v2 ORU^R01 radiology result into a ``ReportEvent`` (stage: normalise; also the loader, demo).

Input: raw ER7 bytes (v2.3 – v2.7; CR, LF or CRLF segments; UTF-8, ISO-8859-1 or the MSH-18 charset).
Output: ``ReportEvent`` (source hl7v2). Failure modes: ``Reject`` subclasses only, carrying MSH-10 and the
accession, never text: ``UnsupportedMessage`` (answer AR), ``bad_encoding``, ``bad_segment``, ``missing_obr``,
``missing_accession``, ``missing_status``, ``no_report_text``, ``malformed``. Field choices: see ``_normalise``.
"""

from __future__ import annotations

from datetime import datetime

from gateway.classify import classify_procedure
from gateway.hl7.er7 import Delimiters, Segment, get, split_segments
from gateway.hl7.msh import MshInfo, check_message_type, peek_msh
from gateway.hl7.observations import ObxCodes, ReportText, read_observations
from gateway.hl7.pid import pid_phi
from gateway.hl7.tables import ORDER_STATUS, RESULT_STATUS, charset_codec
from gateway.hl7.ts import parse_ts
from gateway.settings import GatewaySettings
from schemas.errors import GatewayError, Reject
from schemas.events import ReportEvent, ReportStatus, Source, event_id_for, utcnow
from schemas.language import detect_language

_FRAMING = b"\x0b\x1c\r\n\t \xef\xbb\xbf"  # MLLP bytes, blank lines or a BOM left around the message


def decode_message(raw: bytes, msh: MshInfo) -> tuple[str, str]:
    """Message text and the codec used: MSH-18 when it names one, else UTF-8, else ISO-8859-1.

    A declared charset other than UTF-8/ASCII that does not decode is a ``Reject``; with no
    declaration (or a UTF-8/ASCII one, often wrong in practice) Latin-1 is the fallback, as it
    decodes any byte.
    """
    codec = charset_codec(msh.charset) if msh.charset else ""
    if codec in ("", "utf-8", "ascii"):
        try:
            return raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return raw.decode("latin-1"), "latin-1"
    try:
        return raw.decode(codec), codec
    except UnicodeDecodeError:
        raise Reject(
            "bad_encoding", f"bytes are not valid {msh.charset} (MSH-18)", message_control_id=msh.message_control_id
        ) from None


def _order(segments: list[Segment]) -> tuple[Segment | None, Segment | None, list[Segment]]:
    """(ORC, OBR, OBX list) of the first order group that carries observations."""
    orc: Segment | None = None
    first: tuple[Segment | None, Segment | None, list[Segment]] | None = None
    current: tuple[Segment | None, Segment | None, list[Segment]] | None = None
    for seg in segments:
        name = seg[0]
        if name == "ORC":
            orc = seg
        elif name == "OBR":
            current = (orc, seg, [])
            first = first or current
        elif name == "OBX" and current is not None:
            current[2].append(seg)
            if len(current[2]) == 1 and first is not None and not first[2]:
                first = current
    return first if first is not None else (orc, None, [])


def _status(report: ReportText, obr: Segment, orc: Segment | None, d: Delimiters) -> ReportStatus | None:
    return report.status or RESULT_STATUS.get(get(obr, 25, d=d).upper()) or ORDER_STATUS.get(get(orc, 5, d=d).upper())


def _order_ids(obr: Segment, orc: Segment | None, d: Delimiters, msh: MshInfo) -> tuple[str, str, str]:
    """(placer, filler, accession): OBR-2/3 else ORC-2/3; accession OBR-18, else filler, else placer."""
    placer = get(obr, 2, d=d) or get(orc, 2, d=d)
    filler = get(obr, 3, d=d) or get(orc, 3, d=d)
    accession = get(obr, 18, d=d) or filler or placer
    if not accession:
        raise Reject(
            "missing_accession",
            "no accession in OBR-18, OBR-3/ORC-3 or OBR-2/ORC-2",
            message_control_id=msh.message_control_id,
        )
    return placer, filler, accession


def normalise_hl7(raw: bytes, *, settings: GatewaySettings, received_at: datetime | None = None) -> ReportEvent:
    """The ``ReportEvent`` of one ORU^R01 message; ``Reject`` (or ``UnsupportedMessage``) otherwise."""
    msh = peek_msh(raw)
    try:
        return _normalise(raw, msh, settings, received_at or utcnow())
    except GatewayError:
        raise
    except Exception as exc:  # a parser bug must still dead-letter the message, not crash the stage
        raise Reject(
            "malformed", f"unreadable message ({type(exc).__name__})", message_control_id=msh.message_control_id
        ) from exc


# Field choices, with the HL7 v2.5.1 chapter 4/7 definitions that decide them:
# - accession: OBR-18 (placer field 1, where RIS put it), else OBR-3 / ORC-3 filler order number,
#   else OBR-2 / ORC-2 placer order number;
# - status: OBX-11 (table 0085) of the report OBX (the most signed one when they differ), else
#   OBR-25 (table 0123), else ORC-5 (table 0038);
# - radiologist: OBR-32 principal result interpreter (id only), else OBX-16 responsible observer;
# - one report per message: the OBX under the first OBR that has any (later OBRs are linked exams).
def _normalise(raw: bytes, msh: MshInfo, settings: GatewaySettings, received_at: datetime) -> ReportEvent:
    check_message_type(msh)
    text, codec = decode_message(raw.strip(_FRAMING), msh)
    d = Delimiters.from_msh(msh.field_sep, msh.encoding_chars)
    segments = split_segments(text, d)
    orc, obr, obxs = _order(segments)
    if obr is None:
        raise Reject("missing_obr", "ORU^R01 has no OBR segment", message_control_id=msh.message_control_id)
    placer, filler, accession = _order_ids(obr, orc, d, msh)
    ids = {"message_control_id": msh.message_control_id, "accession": accession}
    codes = ObxCodes.of(settings.findings_obx_codes, settings.impression_obx_codes, settings.report_obx_codes)
    report = read_observations(obxs, d, codes, codec)
    status = _status(report, obr, orc, d)
    if status is None:
        raise Reject("missing_status", "no result status in OBX-11, OBR-25 or ORC-5", **ids)
    if not (report.findings or report.impression) and status is not ReportStatus.CANCELLED:
        raise Reject("no_report_text", "no findings or impression text in any OBX", **ids)
    code, proc_text = get(obr, 4, 1, d=d) or get(obr, 4, 4, d=d), get(obr, 4, 2, d=d) or get(obr, 4, 5, d=d)
    modality, body = classify_procedure(code, proc_text, get(obr, 24, d=d), settings.procedure_table)
    pid = next((s for s in segments if s[0] == "PID"), None)
    return ReportEvent(
        event_id=event_id_for(msh.sender, msh.message_control_id),
        source=Source.HL7V2,
        message_control_id=msh.message_control_id,
        sender=msh.sender,
        accession=accession,
        placer_order_number=placer,
        filler_order_number=filler,
        patient_id=get(pid, 3, d=d) or get(pid, 2, d=d),  # PID-2 external id: v2.3 senders, withdrawn in v2.7
        site=msh.sending_facility or settings.site,
        modality=modality,
        body_system=body,
        procedure_code=code,
        procedure_text=proc_text,
        findings=report.findings,
        impression=report.impression,
        status=status,
        language=detect_language(report.findings or report.impression),
        radiologist_id=get(obr, 32, 1, 1, d=d) or report.observer_id,
        observed_at=parse_ts(get(obr, 7, d=d)),
        received_at=received_at,
        hl7_version=msh.version,
        phi=pid_phi(pid, d, (accession, placer, filler)),
    )
