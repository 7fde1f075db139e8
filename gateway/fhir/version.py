"""Tell FHIR R4 / R4B payloads from R5, STU3 and DSTU2 ones, and refuse the latter by name.

Stage: ingest and normalise (part of ``parse_fhir``, before and after R4B validation). Input: the decoded JSON
object. Output: the release it is read as ("R4" or "R4B"). Failure modes: ``FhirReject`` ``fhir_unsupported_version``
(HTTP 422) naming the element, or the ``meta.profile``, and the release it belongs to. Rules: gateway/README.md.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from gateway.fhir.validate import UNSUPPORTED_VERSION, FhirReject, element_path

R4, R4B, R5, STU3, DSTU2 = "R4", "R4B", "R5", "STU3", "DSTU2"
ACCEPTED = frozenset({R4, R4B})
LABEL = {R4: "FHIR R4 (4.0.1)", R4B: "FHIR R4B (4.3.0)", R5: "FHIR R5 (5.0.0)", STU3: "FHIR STU3 (3.0.2)",
         DSTU2: "FHIR DSTU2 (1.0.2)", "R6": "FHIR R6"}
_TAKES = "this endpoint takes FHIR R4 (4.0.1) and R4B (4.3.0)"

# DiagnosticReport elements that exist in one release only, with what R4 calls them (R5 diagnosticreport.html
# "Changes from R4"; R4 diagnosticreport-version-maps.html for STU3; DSTU2 from the 1.0.2 resource definition).
_ONLY_IN: dict[str, tuple[str, str]] = {
    "note": (R5, "R4 has no DiagnosticReport.note; send it as an Observation or in presentedForm"),
    "study": (R5, "R4 calls it imagingStudy (Reference(ImagingStudy))"),
    "supportingInfo": (R5, "R4 has no DiagnosticReport.supportingInfo"),
    "composition": (R5, "R4 has no DiagnosticReport.composition"),
    "codedDiagnosis": (STU3, "R4 calls it conclusionCode"),
    "image": (STU3, "R4 calls it media"),
    "context": (STU3, "R4 calls it encounter"),
    "request": (DSTU2, "R4 calls it basedOn"),
}
# The canonical URL of a core profile carries the FHIR version after '|' (R4 references.html#canonical);
# the version-specific form http://hl7.org/fhir/<R5|5.0>/StructureDefinition/ names it in the path.
_CORE = re.compile(r"^https?://hl7\.org/fhir/(?:(?P<rel>R4B?|R5|R6|STU3|DSTU2|[0-9.]+)/)?StructureDefinition/"
                   r"[A-Za-z]+(?:\|(?P<ver>[0-9][0-9.\-a-z]*))?$")
_REL = {"R4": R4, "R4B": R4B, "R5": R5, "R6": "R6", "STU3": STU3, "DSTU2": DSTU2}


def release_of_version(version: str) -> str:
    """The release a FHIR version string belongs to (4.0.1 → R4, 4.3.0 → R4B, 5.0.0 → R5…); '' if unknown.

    4.1 was the R4B ballot and 4.3 its release; 4.2 and 4.4–4.6 were R5 ballots (FHIR version history).
    """
    parts = version.split(".")
    major, minor = parts[0], (parts[1] if len(parts) > 1 else "0")
    if major == "4":
        return R4 if minor == "0" else R4B if minor in ("1", "3") else R5
    return {"1": DSTU2, "3": STU3, "5": R5, "6": "R6"}.get(major, "")


def _declared(resource: dict[str, Any]) -> Iterator[tuple[int, str]]:
    profiles = (resource.get("meta") or {}).get("profile") if isinstance(resource.get("meta"), dict) else None
    for i, url in enumerate(profiles if isinstance(profiles, list) else []):
        match = _CORE.match(url) if isinstance(url, str) else None
        if match is None:
            continue  # US Core, IHE and other IG profiles are versioned by their IG, not by FHIR
        release = _REL.get(match["rel"] or "") or release_of_version(match["rel"] or match["ver"] or "")
        if release:
            yield i, release


def _resources(data: dict[str, Any], root: str) -> Iterator[tuple[dict[str, Any], str]]:
    yield data, root
    if data.get("resourceType") == "Bundle" and isinstance(data.get("entry"), list):
        for i, entry in enumerate(data["entry"]):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield entry["resource"], f"{root}.entry[{i}].resource"


def _refuse(reason: str, expression: list[str], issue_type: str) -> FhirReject:
    return FhirReject(UNSUPPORTED_VERSION, f"{reason}; {_TAKES}", expression=expression, issue_type=issue_type)


def _report_hints(report: dict[str, Any], root: str) -> Iterator[tuple[str, str, str]]:
    """``(path, release, why)`` for each DiagnosticReport element that exists only outside R4/R4B."""
    for name, (release, why) in _ONLY_IN.items():
        if name in report or f"_{name}" in report:
            yield f"{root}.{name}", release, why
    if report.get("status") == "modified":
        yield f"{root}.status", R5, "'modified' is an R5 status code, not in the R4 ValueSet diagnostic-report-status"
    if isinstance(report.get("category"), dict):
        yield f"{root}.category", STU3, "a single category is STU3/DSTU2; R4 category is a list"
    performer = report.get("performer")
    if isinstance(performer, dict):
        yield f"{root}.performer", DSTU2, "a single performer is DSTU2; R4 performer is a list of References"
    elif isinstance(performer, list) and any(isinstance(p, dict) and "actor" in p for p in performer):
        yield f"{root}.performer", STU3, "performer.actor is STU3; R4 performer is a Reference"
    media_list = report.get("media")
    for i, media in enumerate(media_list if isinstance(media_list, list) else []):
        link = media.get("link") if isinstance(media, dict) else None
        if isinstance(link, dict) and str(link.get("reference") or "").startswith("DocumentReference/"):
            yield (f"{root}.media[{i}].link", R5,
                   "media.link to a DocumentReference is R5 (R4 links a Media resource, which R5 removed)")


def check_release(data: dict[str, Any], root: str) -> str:
    """``R4`` or ``R4B``, from ``meta.profile`` and DiagnosticReport structure; refuses any other release."""
    found = R4
    for resource, path in _resources(data, root):
        for i, release in _declared(resource):
            if release not in ACCEPTED:
                where = f"{path}.meta.profile[{i}]"
                raise _refuse(f"{where}: declares {LABEL[release]}", [where], "not-supported")
            found = R4B if release == R4B else found
        if resource.get("resourceType") != "DiagnosticReport":
            continue
        hints = list(_report_hints(resource, path))
        if hints:
            parts = "; ".join(f"{p}: belongs to {LABEL[r]}, not R4 ({why})" for p, r, why in hints[:5])
            kind = "code-invalid" if hints[0][0].endswith(".status") else "structure"
            raise _refuse(parts, [p for p, _, _ in hints[:5]], kind)
    return found


@cache
def _other_models(kind: str) -> tuple[tuple[str, type[Any]], ...]:
    """fhir.resources' R5 and STU3 models of ``kind``, imported on the first refusal only (≈0.4 s)."""
    if kind not in ("DiagnosticReport", "Bundle"):
        return ()
    module = kind.lower()
    r5 = importlib.import_module(f"fhir.resources.{module}")
    stu3 = importlib.import_module(f"fhir.resources.STU3.{module}")
    return (R5, getattr(r5, kind)), (STU3, getattr(stu3, kind))


def other_release(data: dict[str, Any], kind: str, root: str, r4_error: ValidationError | None) -> FhirReject | None:
    """When R4B validation failed: a refusal naming the release the payload *does* validate as, else None.

    fhir.resources' R5 and STU3 models are used only to recognise such payloads, never to accept one. The
    elements named are those R4 does not define (R4B's ``extra_forbidden`` errors), e.g. an R5-only element
    of an Observation inside a Bundle.
    """
    errors = r4_error.errors(include_input=False, include_url=False) if r4_error is not None else []
    if errors and all("missing" in e["type"] for e in errors):
        return None  # only required elements absent: an R4 mistake, whatever else it might validate as
    for release, model in _other_models(kind):
        try:
            model.model_validate(data)
        except (ValidationError, KeyError, TypeError, ValueError):
            continue
        extra = [(element_path(root, tuple(e["loc"])), "an element R4 does not define")
                 for e in errors if e["type"] == "extra_forbidden"]
        extra += [(path, f"{kind_} is not an R4 resource") for path, kind_ in _foreign_resources(data, root)]
        named = "; ".join(f"{p}: {why}" for p, why in extra[:5]) or "R4 validation fails"
        return _refuse(f"{root}: validates as {LABEL[release]}, not as R4 ({named})",
                       [p for p, _ in extra[:5]] or [root], "structure")
    return None


def _foreign_resources(data: dict[str, Any], root: str) -> Iterator[tuple[str, str]]:
    """Entries and contained resources whose resourceType R4B does not have (R5's ImagingSelection…)."""
    for resource, path in _resources(data, root):
        found = [(path, resource.get("resourceType"))]
        found += [(f"{path}.contained[{i}]", c.get("resourceType"))
                  for i, c in enumerate(resource.get("contained") or []) if isinstance(c, dict)]
        for where, kind in found:
            if isinstance(kind, str) and _R4B_TYPE.match(kind) and not _is_r4b(kind):
                yield where, kind


_R4B_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


def _is_r4b(kind: str) -> bool:
    try:
        get_fhir_model_class(kind)
    except (KeyError, ValueError):
        return False
    return True
