"""HL7 v2 TS/DTM timestamps (HL7 v2.5.1 §2.A.74 TS, §2.A.22 DTM) to and from aware UTC datetimes.

Stage: normalise (OBR-7 observation time) and the outbound builders (MSH-7, OBR-7).
Input: ``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``. Output: ``datetime`` in UTC, or ``None``. Failure modes:
none; an unreadable timestamp is ``None`` (metadata, not a reason to reject). A timestamp without an offset is read
as UTC: HL7 leaves it to the sender's local time, which the gateway does not know.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_TS = re.compile(
    r"(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<frac>\d{1,4}))?(?P<tz>[+-]\d{4})?"
)


def parse_ts(value: str) -> datetime | None:
    """OBR-7 and friends as an aware UTC datetime; partial precision fills with the start of the unit."""
    match = _TS.fullmatch(value.strip())
    if match is None:
        return None
    g = match.groupdict()
    try:
        tz = UTC
        if g["tz"]:
            sign = -1 if g["tz"][0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(g["tz"][1:3]), minutes=int(g["tz"][3:5])))
        moment = datetime(
            int(g["y"]),
            int(g["mo"] or 1),
            int(g["d"] or 1),
            int(g["h"] or 0),
            int(g["mi"] or 0),
            int(g["s"] or 0),
            int((g["frac"] or "0").ljust(6, "0")[:6]),
            tzinfo=tz,
        )
    except ValueError:
        return None
    return moment.astimezone(UTC)


def format_ts(moment: datetime) -> str:
    """An aware datetime as HL7 DTM to the second with offset (naive ones are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
