"""The PHI strings of one FHIR DiagnosticReport: its Patient's identifiers, name, birth date, telecom, address.

Stage: normalise (part of ``parse_fhir``). Input: the DiagnosticReport, the resolver of its contained resources and
Bundle, the order numbers already read. Output: de-duplicated exact strings (``ReportEvent.phi``) the export scrubs and
checks. Failure modes: none; an unresolvable subject (the gateway never fetches) still gives its logical identifier and
display; contained Patients are read too. Patient elements read: gateway/README.md.
"""

from __future__ import annotations

from typing import Any

from gateway.fhir.references import Resolver, type_of
from gateway.hl7.pid import unique_phi
from schemas.language import has_ideograph


def _names(patient: Any) -> list[str]:
    values: list[str] = []
    for name in getattr(patient, "name", None) or []:
        family, given = str(name.family or ""), [str(g) for g in name.given or []]
        values += [family, *given, str(name.text or "")]
        first = " ".join(given)
        if family and given and has_ideograph(family + first):
            values.append(f"{family}{''.join(given)}")  # CJK names are written family first, no space
        elif family and given:
            values += [f"{first} {family}", f"{family} {first}", f"{family}, {first}"]
    return values


def _addresses(patient: Any) -> list[str]:
    values: list[str] = []
    for addr in getattr(patient, "address", None) or []:
        values += [str(line) for line in addr.line or []]
        values += [str(v or "") for v in (addr.city, addr.district, addr.state, addr.postalCode, addr.text)]
    return values


def patient_phi(patient: Any) -> list[str]:
    """Identifiers, names, birth date, telecom and address values of one Patient resource."""
    values = [str(i.value) for i in getattr(patient, "identifier", None) or [] if i.value]
    values += _names(patient)
    if getattr(patient, "birthDate", None):
        values.append(str(patient.birthDate))
    values += [str(t.value) for t in getattr(patient, "telecom", None) or [] if t.value]
    return values + _addresses(patient)


def report_phi(report: Any, resolver: Resolver, order_numbers: tuple[str, ...] = ()) -> list[str]:
    """The PHI strings of one report: order numbers, the subject Patient (resolved or logical)."""
    values = list(order_numbers)
    subject = report.subject
    target = resolver.resolve(subject.reference) if subject is not None else None
    patients = [target] if type_of(target) == "Patient" else []
    patients += [p for p in resolver.all_contained("Patient") if p is not target]
    for patient in patients:
        values += patient_phi(patient)
    if subject is not None:
        if subject.identifier is not None and subject.identifier.value:
            values.append(str(subject.identifier.value))
        if subject.display:
            values.append(str(subject.display))
    return unique_phi(values)
