"""Resolve FHIR references inside one submission: ``contained`` resources and Bundle entries.

Stage: normalise (part of ``parse_fhir``). Input: a validated R4B resource and the index of its Bundle.
Output: the referenced resource, or the id / identifier a reference stands for. Failure modes: none; an unresolvable
reference yields ``None`` / ``""`` (the gateway never fetches over the network).
Rules: ``#id`` names a contained resource, else entry ``fullUrl``, then ``Type/id`` (details: gateway/README.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def type_of(resource: Any) -> str:
    return str(resource.get_resource_type()) if resource is not None else ""


def index_bundle(entries: Iterable[Any]) -> dict[str, Any]:
    """``fullUrl`` and ``Type/id`` → resource, over every entry that carries a resource."""
    index: dict[str, Any] = {}
    for entry in entries:
        resource = entry.resource
        if resource is None:
            continue
        if entry.fullUrl:
            index[str(entry.fullUrl)] = resource
        if resource.id:
            index.setdefault(f"{type_of(resource)}/{resource.id}", resource)
    return index


def split_reference(reference: str) -> tuple[str, str]:
    """``("Patient", "xyz")`` from ``Patient/xyz``, ``http://host/fhir/Patient/xyz/_history/2``; else ``("", "")``."""
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2][:1].isupper() and parts[-1]:
        return parts[-2], parts[-1]
    return "", ""


@dataclass(frozen=True)
class Resolver:
    """What one resource's references can reach: its own contained resources and its Bundle."""

    contained: dict[str, Any] = field(default_factory=dict)
    bundle: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, resource: Any, bundle: dict[str, Any] | None = None) -> Resolver:
        contained = {f"#{c.id}": c for c in resource.contained or [] if getattr(c, "id", None)}
        return cls(contained, bundle or {})

    def resolve(self, reference: str | None) -> Any:
        """The target resource, or None."""
        if not reference:
            return None
        if reference.startswith("#"):
            return self.contained.get(reference)
        if reference in self.bundle:
            return self.bundle[reference]
        kind, rid = split_reference(reference)
        return self.bundle.get(f"{kind}/{rid}") if kind else None

    def all_contained(self, kind: str) -> list[Any]:
        return [c for c in self.contained.values() if type_of(c) == kind]


# R4 terminology.hl7.org canonical of HL7 v2 table 0203 (identifier type), and the STU3-era one senders still use.
V2_0203_SYSTEMS = frozenset({None, V2_0203, "http://hl7.org/fhir/v2/0203"})
_TYPE_TEXT = {"ACSN": "accession"}


def has_type(ident: Any, type_code: str) -> bool:
    """Whether an Identifier's ``type`` is ``type_code`` of table 0203 (a coding, or for ACSN a text saying so)."""
    if ident.type is None:
        return False
    if any(c.code == type_code and c.system in V2_0203_SYSTEMS for c in ident.type.coding or []):
        return True
    words = _TYPE_TEXT.get(type_code)
    return bool(words and not ident.type.coding and words in str(ident.type.text or "").lower())


def identifier_of_type(identifiers: Iterable[Any] | None, type_code: str) -> str:
    """The value of the first identifier whose ``type`` is ``type_code`` (HL7 v2 table 0203: ACSN, MR…)."""
    return next((str(i.value) for i in identifiers or [] if i.value and has_type(i, type_code)), "")


def reference_key(ref: Any, resolver: Resolver, kinds: frozenset[str], prefer: str = "") -> str:
    """The id a Reference stands for, when it points at one of ``kinds``; ``""`` otherwise.

    A resolvable target gives its identifier (type ``prefer`` first) or its id; an unresolvable
    literal reference gives the id part of ``Type/id``; a logical reference its identifier value;
    a display only when the reference says its type.
    """
    if ref is None:
        return ""
    target = resolver.resolve(ref.reference)
    if target is not None:
        if type_of(target) not in kinds:
            return ""
        idents = getattr(target, "identifier", None) or []
        first = next((str(i.value) for i in idents if i.value), "")
        return identifier_of_type(idents, prefer) or first or str(target.id or "")
    if ref.reference:
        kind, rid = split_reference(ref.reference)
        return rid if kind in kinds else ""
    if ref.type and ref.type not in kinds:
        return ""
    if ref.identifier is not None and ref.identifier.value:
        return str(ref.identifier.value)
    return str(ref.display) if ref.type in kinds and ref.display else ""
