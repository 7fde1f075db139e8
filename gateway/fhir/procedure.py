"""The procedure of one FHIR DiagnosticReport: code, modality, body system, and whether it is imaging at all.

Stage: normalise (part of ``parse_fhir``). Input: a validated R4B DiagnosticReport (``code``, ``category``,
``specimen``, ``imagingStudy``, ``media``), its result Observations, the site's procedure table. Output: ``Procedure``; the modality and body
system are ``gateway.classify``'s answer. Failure modes: none; ``Procedure.not_imaging`` says why a caller refuses it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.classify import Classification, Coding
from gateway.classify import classify as classify_codings
from gateway.fhir import codes
from schemas.events import BodySystem, Modality

LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
SNOMED = "http://snomed.info/sct"
_LABEL = {LOINC: "LOINC", CPT: "CPT", SNOMED: "SNOMED CT"}
_SYSTEM_NAME = {**_LABEL, codes.V2_0074: "HL7 v2 table 0074", "": "no system"}
_STANDARD = frozenset(_LABEL)
# HL7 v2 table 0074 (diagnostic service section id): sections that read images, and sections that never do.
_IMAGING_0074 = frozenset({"RAD", "RUS", "RX", "CT", "NMR", "NMS", "OUS", "VUS", "CUS", "XRC", "CTH"})
_OTHER_0074 = frozenset({"AU", "BG", "BLB", "CH", "CP", "EC", "EN", "GE", "HM", "ICU", "IMM", "LAB", "MB", "MCB",
                         "MYC", "NRS", "OSL", "OT", "PAR", "PAT", "PF", "PHR", "PT", "RC", "RT", "SP", "SR", "TX", "VR"})
# Report categories in other code systems: US Core DiagnosticReport category (LOINC LP29684-5 Radiology,
# LP7839-6 Pathology, LP29693-6 Laboratory) and SNOMED CT specialties / test types.
_IMAGING_CATEGORY = frozenset({(LOINC, "LP29684-5"), (SNOMED, "394914008"), (SNOMED, "363679005")})
_OTHER_CATEGORY = frozenset({(LOINC, "LP7839-6"), (LOINC, "LP29693-6"), (SNOMED, "15220000"),
                             (SNOMED, "252275004"), (SNOMED, "394915009"), (SNOMED, "108257001")})
_V2_0074 = codes.V2_0074
# Words of a procedure name that say imaging although no modality table row knows it (DXA bone densitometry), and
# stems of the HL7 v2 table 0074 section names that never read images (Genetics, Pathology, Cytopathology,
# Microbiology, Hematology, Serology, Toxicology, Virology, Laboratory, Chemistry…), for a procedure text with
# no imaging sign at all.
_IMAGING_WORDS = ("radiolog", "imaging", "densitometr", "absorptiometr", "dxa", "dexa", "angiogra", "fluorosc",
                  "tomograph", "sonograph", "ultrason", "radiograph", "mammogra", "x-ray", "xray")
_OTHER_WORDS = ("genetic", "genomic", "patholog", "cytolog", "microbiol", "hematolog", "haematolog", "serolog",
                "toxicolog", "virolog", "laborator", "chemistry", "culture", "urinalysis", "blood count")
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$")


def _token(value: object) -> str:
    """A code fit to echo in a reason (codes are short tokens; anything else might be text)."""
    return repr(value) if isinstance(value, str) and _CODE.match(value) else "an unrecognised code"


@dataclass(frozen=True)
class Procedure:
    code: str
    text: str
    modality: Modality
    body_system: BodySystem
    classified_by: str
    notes: tuple[str, ...] = ()
    not_imaging: str = ""  # why this is positively not an imaging report, with the element path; "" otherwise
    path: str = ""


def _cpt_section(code: str) -> str:
    """AMA CPT code set sections: 70010-79999 Radiology, 80047-89398 Pathology and Laboratory."""
    if not (code.isascii() and code.isdigit() and len(code) == 5):  # "¹²³⁴⁵".isdigit() is true; int() of it fails
        return ""
    return "imaging" if 70010 <= int(code) <= 79999 else "other" if 80047 <= int(code) <= 89398 else ""


# The classifier speaks HL7 v2 (OBR-24 is the section, OBR-4.3 the coding system); a FHIR report has them as
# DiagnosticReport.category and code.coding.system, so its words are translated for the event's notes.
_FHIR_WORDS = (("OBR-24", "category"), ("OBR-4.3", "code.coding.system"), ("obr24", "category"))


def _fhir_words(text: str) -> str:
    for hl7, fhir in _FHIR_WORDS:
        text = text.replace(hl7, fhir)
    return text


def classify(report: Any, table: Path | None) -> Classification:
    """``gateway.classify.classify`` over every coding of ``code`` (with its display), its text and ``category``.

    The hint is a DICOM modality of ``category`` when there is one (it names the modality), else its HL7 v2
    table 0074 section (a department: the classifier lets the codes and text refine or override it).
    """
    concept = report.code
    codings = [Coding(str(c.code or ""), str(c.display or ""), str(c.system or "")) for c in concept.coding or []]
    if concept.text:
        codings.append(Coding("", str(concept.text)))
    dicom, section = codes.modality_hints(report.category)
    found = classify_codings(tuple(codings), dicom or section, table)
    return Classification(found.modality, found.body_system, _fhir_words(found.classified_by),
                          tuple(_fhir_words(n) for n in found.notes))


def _categories(report: Any) -> list[tuple[str, str, int]]:
    return [(str(c.system or ""), str(c.code or "").upper() if c.system in (None, _V2_0074) else str(c.code), i)
            for i, concept in enumerate(report.category or []) for c in concept.coding or [] if c.code]


def _scope(report: Any, modality: Modality, root: str) -> tuple[str, str, str]:
    """``("imaging"|"other"|"", why, path)``: what the report itself says about being an imaging report."""
    cats = _categories(report)
    cpt = [_cpt_section(str(c.code)) for c in report.code.coding or [] if c.system == CPT and c.code]
    words = f"{report.code.text or ''} {' '.join(str(c.display or '') for c in report.code.coding or [])}".lower()
    if (modality is not Modality.OT or report.imagingStudy or report.media or "imaging" in cpt
            or any(w in words for w in _IMAGING_WORDS)
            or any((s == _V2_0074 or not s) and c in _IMAGING_0074 for s, c, _ in cats)
            or any((s, c) in _IMAGING_CATEGORY for s, c, _ in cats)):
        return "imaging", "", ""
    for system, code, i in cats:
        if (system == _V2_0074 and code in _OTHER_0074) or (system, code) in _OTHER_CATEGORY:
            return "other", f"category {_token(code)} ({_SYSTEM_NAME.get(system, 'local')}) is not an imaging service", f"{root}.category[{i}]"
    if report.specimen:
        return "other", "a report on specimens is a laboratory or pathology report", f"{root}.specimen"
    if "other" in cpt:
        return "other", "a CPT Pathology and Laboratory code (80047-89398)", f"{root}.code"
    if any(w in words for w in _OTHER_WORDS):
        return "other", "the procedure names a laboratory or pathology discipline (HL7 v2 table 0074)", f"{root}.code"
    standard = [c for c in report.code.coding or [] if c.code]
    if standard and all(c.system in _STANDARD for c in standard):
        first = standard[0]
        return ("other", f"{_LABEL[str(first.system)]} code {_token(first.code)} is not an imaging procedure the "
                "classifier knows, and no category names an imaging service", f"{root}.code")
    return "", "", ""


def _laboratory_results(results: Sequence[Any], table: Path | None, text_codes: frozenset[str]) -> bool:
    """Whether every result Observation is a LOINC/SNOMED CT coded test that is neither report text nor imaging.

    R4 DiagnosticReport.result holds the report's atomic results; a lab panel under a local report code (the R4
    general examples' Acme "E/LFT (MASTER)") says what it is only there. A findings/impression/report-coded
    Observation, or one whose code the classifier reads as an imaging procedure, keeps the report in.
    """
    for obs in results:
        found = [c for c in obs.code.coding or [] if c.code]
        if (not any(c.system in (LOINC, SNOMED) for c in found) or any(str(c.code) in text_codes for c in found)
                or classify_codings(tuple(Coding(str(c.code), "", str(c.system or "")) for c in found), "",
                                    table).modality is not Modality.OT):
            return False
    return bool(results)


def procedure_of(report: Any, table: Path | None, root: str, results: Sequence[Any] = (),
                 text_codes: frozenset[str] = frozenset()) -> Procedure:
    """``results`` are the report's Observations, ``text_codes`` the codes of the ones carrying report text."""
    code, text = codes.procedure(report.code)
    found = classify(report, table)
    scope, why, path = _scope(report, found.modality, root)
    if not scope and _laboratory_results(results, table, text_codes):
        scope, path = "other", f"{root}.result"
        why = ("every result Observation is a LOINC/SNOMED CT coded test, none an imaging procedure or report "
               "text, and neither code nor category names an imaging service")
    return Procedure(code, text, found.modality, found.body_system, found.classified_by, found.notes,
                     why if scope == "other" else "", path)
