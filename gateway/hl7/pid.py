"""The PHI strings of one ORU^R01: PID identifiers, name, birth date, address, phone, and order numbers.

Stage: normalise (part of ``normalise_hl7``). Input: the PID segment (or None), the delimiters, the order numbers
already read. Output: a de-duplicated list of exact strings (``ReportEvent.phi``), in the order found, that the export
scrubs from and checks against its output. Failure modes: none; absent fields add nothing.
Fields and spellings read (HL7 v2.5.1 §3.4.2): gateway/README.md.
"""

from __future__ import annotations

from gateway.hl7.er7 import Delimiters, Segment, unescape
from schemas.language import has_ideograph


def _repetitions(seg: Segment, field: int, d: Delimiters) -> list[list[str]]:
    """Every repetition of SEG-field as unescaped components (subcomponents joined by a space)."""
    if field >= len(seg) or not seg[field]:
        return []
    reps = []
    for rep in seg[field].split(d.repetition):
        reps.append([unescape(c, d).replace(d.subcomponent, " ").strip() for c in rep.split(d.component)])
    return reps


def _part(components: list[str], n: int) -> str:
    return components[n - 1] if n <= len(components) else ""


def _name_values(xpn: list[str]) -> list[str]:
    family, given, middle = _part(xpn, 1), _part(xpn, 2), _part(xpn, 3)
    values = [family, given, middle]
    if family and given and has_ideograph(family + given):
        values.append(f"{family}{given}")  # CJK names are written without a space, family first
    elif family and given:
        values += [f"{given} {family}", f"{family} {given}", f"{family}, {given}"]
    return values


def _birth_values(ts: str) -> list[str]:
    digits = ts[:8]
    values = [ts]
    if len(digits) == 8 and digits.isdigit():
        values.append(f"{digits[:4]}-{digits[4:6]}-{digits[6:]}")
    return values


def _phone_values(xtn: list[str]) -> list[str]:
    structured = "".join(_part(xtn, n) for n in (5, 6, 7))  # country, area, local number
    return [_part(xtn, 1), _part(xtn, 4), structured]


def pid_phi(pid: Segment | None, d: Delimiters, order_numbers: tuple[str, ...] = ()) -> list[str]:
    """The exact PHI strings of the PID segment plus the order numbers (accession, placer, filler)."""
    values: list[str] = list(order_numbers)
    if pid is not None:
        for field in (2, 3, 4, 19):
            values += [_part(cx, 1) for cx in _repetitions(pid, field, d)]
        for field in (5, 6, 9):
            for xpn in _repetitions(pid, field, d):
                values += _name_values(xpn)
        values += [v for ts in _repetitions(pid, 7, d) for v in _birth_values(_part(ts, 1))]
        for xad in _repetitions(pid, 11, d):
            values += [_part(xad, n) for n in (1, 2, 3, 4, 5)]
        for field in (13, 14):
            for xtn in _repetitions(pid, field, d):
                values += _phone_values(xtn)
    return unique_phi(values)


def unique_phi(values: list[str]) -> list[str]:
    """PHI values with whitespace normalised, empty ones dropped, first occurrence order kept."""
    seen: dict[str, None] = {}
    for value in values:
        value = " ".join(value.split())
        if value:
            seen.setdefault(value, None)
    return list(seen)
