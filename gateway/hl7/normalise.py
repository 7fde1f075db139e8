"""Normalise one HL7 v2 ORU^R01 radiology result into ``ReportEvent``s, one per OBR group (stage: normalise).

Input: raw ER7 bytes (v2.3 – v2.7; CR, LF or CRLF segments; charset by evidence, MSH-18 as a claim). Output:
``list[ReportEvent]`` (``normalise_oru``) or the first (``normalise_hl7``). Failure modes: ``Reject`` subclasses only,
with MSH-10 and the accession, never text: ``UnsupportedMessage``, ``bad_encoding``, ``bad_segment``, ``missing_obr``,
``missing_accession``, ``missing_status``, ``bad_status``, ``no_report_text``, ``malformed``. Rules: gateway/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from gateway.classify import Coding, classify
from gateway.hl7.charset import decode_message
from gateway.hl7.er7 import Delimiters, Segment, get, get_text, split_segments
from gateway.hl7.groups import OrderGroup, OrderIds, order_groups, order_ids
from gateway.hl7.msh import MshInfo, check_message_type, peek_msh
from gateway.hl7.observations import ObxCodes, ReportText, read_notes, read_observations
from gateway.hl7.pid import pid_phi
from gateway.hl7.status import StatusReading, read_status
from gateway.hl7.ts import parse_ts
from gateway.settings import GatewaySettings
from schemas.errors import GatewayError, Reject
from schemas.events import ReportEvent, ReportStatus, Source, event_id_for, utcnow
from schemas.language import detect_language

_FRAMING = b"\x0b\x1c\r\n\t \xef\xbb\xbf"  # MLLP bytes, blank lines or a BOM left around the message
_SIGNED = (ReportStatus.FINAL, ReportStatus.AMENDED)
_NO_TEXT_NEEDED = (ReportStatus.CANCELLED, ReportStatus.WITHDRAWN)


@dataclass(frozen=True)
class _Message:
    msh: MshInfo
    d: Delimiters
    settings: GatewaySettings
    codec: str
    pid: Segment | None
    received_at: datetime
    notes: tuple[str, ...]
    several: bool  # more than one OBR group: reject reasons and notes name the group


@dataclass(frozen=True)
class _Group:
    group: OrderGroup
    ids: OrderIds
    text: ReportText
    reading: StatusReading
    notes: tuple[str, ...] = ()
    inherited_status: bool = False  # the status is only an earlier group's ORC-5


def normalise_oru(raw: bytes, *, settings: GatewaySettings, received_at: datetime | None = None) -> list[ReportEvent]:
    """One ``ReportEvent`` per OBR group of one ORU^R01 message; ``Reject`` (or ``UnsupportedMessage``) otherwise."""
    msh = peek_msh(raw)
    try:
        return _normalise(raw, msh, settings, received_at or utcnow())
    except GatewayError:
        raise
    except Exception as exc:  # a parser bug must still dead-letter the message, not crash the stage
        raise Reject(
            "malformed", f"unreadable message ({type(exc).__name__})", message_control_id=msh.message_control_id
        ) from exc


def normalise_hl7(raw: bytes, *, settings: GatewaySettings, received_at: datetime | None = None) -> ReportEvent:
    """The ``ReportEvent`` of the first OBR group (``normalise_oru`` gives every group's)."""
    return normalise_oru(raw, settings=settings, received_at=received_at)[0]


def _normalise(raw: bytes, msh: MshInfo, settings: GatewaySettings, received_at: datetime) -> list[ReportEvent]:
    check_message_type(msh)
    decoded = decode_message(raw.strip(_FRAMING), msh)
    d = Delimiters.from_msh(msh.field_sep, msh.encoding_chars)
    segments = split_segments(decoded.text, d)
    groups = order_groups(segments)
    if not groups:
        raise Reject("missing_obr", "ORU^R01 has no OBR segment", message_control_id=msh.message_control_id)
    pid = next((s for s in segments if s[0] == "PID"), None)
    msg = _Message(msh, d, settings, decoded.codec, pid, received_at, decoded.notes, len(groups) > 1)
    read = [_read(group, msg) for group in groups]
    kept, skipped = _share_text(read, msg)
    events = [_event(g, msg, n) for n, g in enumerate(kept, 1)]
    if skipped:
        events[0] = events[0].model_copy(update={"notes": [*events[0].notes, *skipped]})
    return events


def _reject(code: str, reason: str, msg: _Message, group: OrderGroup, accession: str = "") -> Reject:
    where = f"OBR #{group.number}: " if msg.several else ""
    return Reject(code, where + reason, message_control_id=msg.msh.message_control_id, accession=accession)


def _read(group: OrderGroup, msg: _Message) -> _Group:
    d, settings = msg.d, msg.settings
    codes = ObxCodes.of(settings.findings_obx_codes, settings.impression_obx_codes, settings.report_obx_codes,
                        settings.procedure_table)
    text = read_observations(group.obxs, d, codes, msg.codec)
    notes: tuple[str, ...] = ()
    if not text.has_text and group.ntes:
        from_notes = read_notes(group.ntes, d, msg.codec)
        if from_notes.has_text:
            text = replace(from_notes, obx_11=text.obx_11, observer_id=text.observer_id)
            notes = ("report text read from NTE segments under the OBR (no OBX carries text)",)
    obr_25 = get(group.obr, 25, d=d)
    reading = read_status(list(text.obx_11), obr_25, get(group.orc, 5, d=d), settings.procedure_table)
    inherited = False
    if reading.status is None and group.status_orc is not None and group.status_orc is not group.orc:
        reading = read_status(list(text.obx_11), obr_25, get(group.status_orc, 5, d=d), settings.procedure_table)
        inherited = reading.status is not None  # ORC-5 of an earlier group's ORC (v2.3: one ORC, several OBR)
    if reading.unknown and reading.status is not None:
        notes += (f"unrecognised status value(s) {', '.join(reading.unknown)}; used {reading.source}",)
    try:
        ids = order_ids(group, d, msg.msh.message_control_id)
    except Reject as exc:
        if msg.several and not text.has_text and (reading.status is None or inherited):
            ids = OrderIds("", "", "", "")  # an order echo without ids: skipped by _share_text, not a reason to reject
        else:
            raise _reject(exc.code, exc.reason, msg, group) from None
    notes = ((ids.note,) if ids.note else ()) + notes
    return _Group(group, ids, text, reading, notes, inherited)


def _share_text(read: list[_Group], msg: _Message) -> tuple[list[_Group], tuple[str, ...]]:
    """Linked exams: an OBR group without text (and not cancelled) shares the report of the nearest group before it
    with text (else the first with text).

    A group with neither text nor a status of its own (OBX-11, OBR-25, its own ORC-5) is no result at all (an
    order echo, a prior), and one without text whose accession a reported group has is that study again: either
    becomes no event, and the first event's notes say so.
    """
    with_text = [g for g in read if g.text.has_text]
    reported = {g.ids.accession for g in with_text}
    echo = [g for g in read if not g.text.has_text and (g.reading.status is None or g.inherited_status
                                                           or g.ids.accession in reported)]
    if len(echo) == len(read):
        echo = []  # nothing but echoes: let the first one be rejected (or stand) on its own
    kept: list[_Group] = []
    for g in read:
        if g in echo:
            continue
        if g.text.has_text or not with_text or g.reading.status in _NO_TEXT_NEEDED:
            kept.append(g)
            continue
        source = next((t for t in reversed(with_text) if t.group.number < g.group.number), with_text[0])
        note = f"no report text of its own: shares the report of OBR #{source.group.number} (linked exams)"
        kept.append(replace(g, text=source.text, notes=g.notes + (note,)))
    skipped = tuple(f"OBR #{g.group.number} (accession {g.ids.accession or 'none'}) has no OBX text and "
                    + ("the accession of a reported group" if g.ids.accession in reported else
                       "no result status of its own") + ": not an event of its own" for g in echo)
    return kept, skipped


def _status(g: _Group, msg: _Message) -> tuple[ReportStatus, bool, tuple[str, ...]]:
    """(status, status_only, notes): OBX-11 / OBR-25 / ORC-5, then what the text says (addendum, no text)."""
    reading, text, accession = g.reading, g.text, g.ids.accession
    if reading.status is None:
        if reading.unknown:
            raise _reject("bad_status", f"no result status table knows {', '.join(reading.unknown)} (HL7 tables "
                          "0085/0123/0038, gateway/data/status.toml)", msg, g.group, accession)
        raise _reject("missing_status", "no result status in OBX-11, OBR-25 or ORC-5", msg, g.group, accession)
    status, status_only, notes = reading.status, reading.status_only, []
    if text.addendum or reading.addendum:
        if status in _SIGNED:
            status = ReportStatus.AMENDED
        elif status not in _NO_TEXT_NEEDED:
            notes.append(f"an addendum on a {status.value} report: the status is kept")
        if reading.addendum and not text.addendum:
            notes.append(f"{reading.source} says addendum but no ADDENDUM section or &ADT OBX was found: "
                         "the addendum is in findings/impression as sent")
    if not (text.findings or text.impression) and status not in _NO_TEXT_NEEDED:
        if status not in _SIGNED:
            raise _reject("no_report_text", "no findings or impression text in any OBX", msg, g.group, accession)
        if not status_only:
            status_only = True
            notes.append("addendum only: findings and impression are those sent earlier for the accession"
                         if text.addendum else f"{status.value} without report text: a status change only")
    return status, status_only, tuple(notes)


def _codings(obr: Segment, d: Delimiters) -> tuple[Coding, ...]:
    """OBR-4 universal service id (CWE: identifier, text, system, then the alternate triplet) and OBR-44 procedure
    code (CNE, often CPT) — HL7 v2.5.1 §4.5.3.4, §4.5.3.44."""
    found = [Coding(get(obr, f, c, d=d), get_text(obr, f, c + 1, d=d), get(obr, f, c + 2, d=d))
             for f, c in ((4, 1), (4, 4), (44, 1))]
    return tuple(c for c in found if c.code or c.text)


def _event(g: _Group, msg: _Message, n: int) -> ReportEvent:
    msh, d, obr = msg.msh, msg.d, g.group.obr
    status, status_only, status_notes = _status(g, msg)
    codings = _codings(obr, d)
    found = classify(codings, get(obr, 24, d=d), msg.settings.procedure_table)
    control_id = msh.message_control_id
    text = g.text
    first_obx_time = next((get(o, 14, d=d) for o in g.group.obxs if get(o, 14, d=d)), "")
    return ReportEvent(
        # HL7 v2.5.1 §2.14.9.10: MSH-10 identifies the message; later OBR groups get "<MSH-10>/<n>" seeds.
        event_id=event_id_for(msh.sender, control_id if n == 1 else f"{control_id}/{n}"),
        source=Source.HL7V2,
        message_control_id=control_id,
        sender=msh.sender,
        accession=g.ids.accession,
        placer_order_number=g.ids.placer,
        filler_order_number=g.ids.filler,
        patient_id=get(msg.pid, 3, d=d) or get(msg.pid, 2, d=d),  # PID-2 external id: v2.3 senders, gone in v2.7
        site=msh.sending_facility or msg.settings.site,
        modality=found.modality,
        body_system=found.body_system,
        procedure_code=get(obr, 4, 1, d=d) or get(obr, 4, 4, d=d) or get(obr, 44, 1, d=d),
        procedure_text=get_text(obr, 4, 2, d=d) or get_text(obr, 4, 5, d=d) or get_text(obr, 44, 2, d=d),
        findings=text.findings,
        impression=text.impression,
        addendum=text.addendum,
        status=status,
        status_only=status_only,
        language=detect_language(text.findings or text.impression or text.addendum),
        radiologist_id=get(obr, 32, 1, 1, d=d) or text.observer_id,
        observed_at=parse_ts(get(obr, 7, d=d) or first_obx_time),
        issued_at=parse_ts(get(obr, 22, d=d)),  # v2.5.1 §4.5.3.22 results rpt/status chng: a final's signing time
        received_at=msg.received_at,
        hl7_version=msh.version,
        phi=pid_phi(msg.pid, d, (g.ids.accession, g.ids.placer, g.ids.filler)),
        classified_by=found.classified_by,
        accession_source=g.ids.accession_source,
        notes=list(msg.notes + g.notes + status_notes + found.notes),
    )
