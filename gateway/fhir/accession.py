"""The accession number of one FHIR DiagnosticReport, where it came from, and the order numbers beside it.

Stage: normalise (part of ``parse_fhir``). Input: a validated R4B DiagnosticReport and its reference resolver.
Output: ``OrderIds`` (accession, ``accession_source``, placer, filler, notes). Failure modes: none; a report with
no identifier and no id gives an empty accession (the caller rejects it). Order of sources: gateway/README.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.fhir.references import Resolver, identifier_of_type, type_of

ACSN_IDENTIFIER = "ACSN identifier"
BASED_ON = "basedOn"
IDENTIFIER = "identifier"
LOGICAL_ID = "logical id"
# RFC 3986 identifiers (urn:uuid:, urn:oid: of an instance) name a record, not an order (R4 identifier-registry).
_INSTANCE_SYSTEM = "urn:ietf:rfc:3986"
LOGICAL_ID_NOTE = (
    "no accession number: no identifier of type ACSN (HL7 v2 table 0203), no basedOn ServiceRequest identifier and "
    "no single untyped identifier, so the resource id stands in; this report cannot be joined with the HL7 v2 "
    "messages of the same study until the sender adds identifier.type ACSN")


@dataclass(frozen=True)
class OrderIds:
    accession: str
    source: str
    placer: str = ""
    filler: str = ""
    notes: tuple[str, ...] = ()


def business(identifiers: Iterable[Any] | None) -> list[Any]:
    """Identifiers that name the report or order in the real world (R4 Identifier.use 'old' is retired)."""
    return [i for i in identifiers or [] if i.value and i.use != "old" and i.system != _INSTANCE_SYSTEM]


def _untyped(identifiers: list[Any]) -> str:
    """The one untyped identifier; among several, the one whose system names an accession (RIS facades)."""
    plain = [i for i in identifiers if i.type is None]
    if len(plain) == 1:
        return str(plain[0].value)
    return next((str(i.value) for i in plain if "accession" in str(i.system or "").lower()), "")


def _orders(report: Any, resolver: Resolver) -> list[tuple[list[Any], bool]]:
    """``(identifiers, is_logical)`` per basedOn ServiceRequest: the resolved resource's, else the reference's own."""
    found: list[tuple[list[Any], bool]] = []
    for ref in report.basedOn or []:
        order = resolver.resolve(ref.reference)
        if type_of(order) == "ServiceRequest":
            found.append((business(order.identifier), False))
        elif order is None and ref.identifier is not None and ref.type in (None, "ServiceRequest"):
            found.append((business([ref.identifier]), True))
    return found


def _from_orders(orders: list[tuple[list[Any], bool]]) -> str:
    for identifiers, logical in orders:
        typed = identifier_of_type(identifiers, "ACSN")
        if typed:
            return typed
        # R4 servicerequest.html: the order's identifiers; a resolved order with one identifier has no choice to make.
        if not logical and len(identifiers) == 1:
            return str(identifiers[0].value)
    return ""


def order_ids(report: Any, resolver: Resolver) -> OrderIds:
    """Accession first from ACSN, then basedOn, then a lone untyped identifier, FILL, PLAC, the logical id.

    HL7 v2 takes OBR-18, else OBR-3 (filler), else OBR-2 (placer); a FHIR report translated from the same
    message (HL7 v2-to-FHIR IG: OBR-3 → identifier type FILL, OBR-2 → PLAC) thus gets the same accession.
    """
    own = business(report.identifier)
    orders = _orders(report, resolver)
    pools = [own] + [ids for ids, _ in orders]
    placer = next((v for v in (identifier_of_type(p, "PLAC") for p in pools) if v), "")
    filler = next((v for v in (identifier_of_type(p, "FILL") for p in pools) if v), "")

    def found(value: str, source: str, *notes: str) -> OrderIds:
        return OrderIds(value, source, placer, filler, notes)

    typed = identifier_of_type(own, "ACSN")
    if typed:
        return found(typed, ACSN_IDENTIFIER)
    ordered = _from_orders(orders)
    if ordered:
        return found(ordered, BASED_ON)
    plain = _untyped(own)
    if plain:
        return found(plain, IDENTIFIER, "identifier has no type: read as the accession number")
    if filler or placer:
        kind = "filler order number (identifier type FILL, as HL7 OBR-3)" if filler else \
            "placer order number (identifier type PLAC, as HL7 OBR-2)"
        return found(filler or placer, IDENTIFIER, f"no ACSN identifier: the {kind} stands in")
    if report.id:
        return found(str(report.id), LOGICAL_ID, LOGICAL_ID_NOTE)
    return found("", "")
