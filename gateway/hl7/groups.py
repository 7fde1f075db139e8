"""The ORDER_OBSERVATION groups of one ORU^R01 and their order ids (stage: normalise).

Input: the segments of one message. Output: ``OrderGroup`` per OBR (its ORC, OBX and order NTE segments) and the
``OrderIds`` of a group. Failure modes: ``Reject("missing_accession")`` from ``order_ids`` when no field carries
one; grouping itself never fails (segments before the first OBR, other than ORC, belong to no group).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.hl7.er7 import Delimiters, Segment, get
from schemas.errors import Reject


@dataclass(frozen=True)
class OrderGroup:
    """HL7 v2.5.1 §7.3.1 ORU_R01 ORDER_OBSERVATION: [ORC] OBR {[NTE]} … {[OBX {[NTE]}]}.

    ``orc`` is the group's own ORC (it precedes its OBR); ``status_orc`` is the last ORC seen so far, so
    v2.3 senders that send one ORC for several OBR still give every group an ORC-5 to fall back on.
    """

    number: int  # 1-based position of the OBR in the message
    obr: Segment
    orc: Segment | None
    status_orc: Segment | None
    obxs: list[Segment] = field(default_factory=list)
    ntes: list[Segment] = field(default_factory=list)  # NTE after the OBR, before its first OBX


@dataclass(frozen=True)
class OrderIds:
    placer: str
    filler: str
    accession: str
    accession_source: str
    note: str = ""


def order_groups(segments: list[Segment]) -> list[OrderGroup]:
    groups: list[OrderGroup] = []
    pending_orc: Segment | None = None
    last_orc: Segment | None = None
    for seg in segments:
        name = seg[0]
        if name == "ORC":
            pending_orc = last_orc = seg
        elif name == "OBR":
            groups.append(OrderGroup(len(groups) + 1, seg, pending_orc, last_orc))
            pending_orc = None
        elif name == "OBX" and groups:
            groups[-1].obxs.append(seg)
        elif name == "NTE" and groups and not groups[-1].obxs:
            groups[-1].ntes.append(seg)
    return groups


def order_ids(group: OrderGroup, d: Delimiters, control_id: str) -> OrderIds:
    """Placer OBR-2/ORC-2, filler OBR-3/ORC-3; accession OBR-18 (placer field 1, where RIS put it), else the
    filler order number, else the placer order number (HL7 v2.5.1 §4.5.3.2, §4.5.3.3, §4.5.3.18).

    OBR-18 is free for the placer's use: some EHRs put a department or modality code there ("NMPCT"). An OBR-18
    without a single digit is not read as the accession (it would join every such study into one).
    """
    obr, orc = group.obr, group.orc
    placer = get(obr, 2, d=d) or get(orc, 2, d=d)
    filler = get(obr, 3, d=d) or get(orc, 3, d=d)
    note = ""
    obr_18 = get(obr, 18, d=d)
    if obr_18 and not any(c.isdigit() for c in obr_18):
        note, obr_18 = f"OBR-18 {obr_18[:20]!r} has no digits, so it is not read as the accession", ""
    for value, source in ((obr_18, "OBR-18"), (get(obr, 3, d=d), "OBR-3"), (get(orc, 3, d=d), "ORC-3"),
                          (get(obr, 2, d=d), "OBR-2"), (get(orc, 2, d=d), "ORC-2")):
        if value:
            return OrderIds(placer, filler, value, source, note)
    raise Reject("missing_accession", "no accession in OBR-18, OBR-3/ORC-3 or OBR-2/ORC-2",
                 message_control_id=control_id)
