"""Findings and impression text of one FHIR DiagnosticReport.

Stage: normalise (part of ``parse_fhir``). Input: a validated R4B DiagnosticReport, its reference resolver, the
settings' observation codes. Output: ``(findings, impression)``, whitespace-normalised; ``("", "")`` for no text.
Failure modes: ``FhirReject`` (``fhir_invalid``) when a ``presentedForm`` names an unknown charset or does not decode.
Where the text comes from (Observations, ``conclusion``, ``presentedForm``, narrative): gateway/README.md.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Any

from gateway.fhir.references import Resolver, type_of
from gateway.fhir.validate import INVALID, FhirReject
from gateway.report_text import normalise_whitespace, split_sections

_SKIPPED_STATUS = frozenset({"cancelled", "entered-in-error"})
_BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre"})


def observations(report: Any, resolver: Resolver) -> list[Any]:
    """The report's Observations: ``result`` targets, then contained ones ``result`` did not name."""
    found = [resolver.resolve(r.reference) for r in report.result or []]
    picked = [o for o in found if type_of(o) == "Observation"]
    picked += [o for o in resolver.all_contained("Observation") if all(o is not p for p in picked)]
    return [o for o in picked if o.status not in _SKIPPED_STATUS]


def _coded(obs: Any, codes: frozenset[str]) -> bool:
    return any(c.code in codes for c in (obs.code.coding or []))


def _value_text(obs: Any) -> str:
    if obs.valueString:
        return str(obs.valueString)
    concept = obs.valueCodeableConcept
    return str(concept.text) if concept is not None and concept.text else ""


def observation_text(found: Iterable[Any], codes: Iterable[str]) -> str:
    wanted = frozenset(codes)
    return "\n\n".join(t for t in (_value_text(o) for o in found if _coded(o, wanted)) if t)


def _media_type(content_type: str) -> tuple[str, str]:
    """``("text/plain", "utf-8")`` from ``text/plain; charset=UTF-8`` (RFC 2045 §5.1 parameters)."""
    media, _, params = content_type.partition(";")
    charset = "utf-8"  # RFC 6657 defaults text/plain to US-ASCII; UTF-8 is its superset and what FHIR sends.
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    return media.strip().lower(), charset


def _is_addendum(form: Any) -> bool:
    return "addend" in str(form.title or "").lower()


def presented_text(report: Any, root: str, addendum: bool = False) -> str:
    """The first ``presentedForm`` attachment that is text/plain with inline ``data``, decoded.

    ``addendum`` picks the first one titled as an addendum instead (an appended report may carry it apart).
    """
    for i, form in enumerate(report.presentedForm or []):
        media, charset = _media_type(str(form.contentType or ""))
        if media != "text/plain" or not form.data or _is_addendum(form) != addendum:
            continue
        path = f"{root}.presentedForm[{i}]"
        raw = form.data if isinstance(form.data, bytes) else _b64(str(form.data), path)
        try:
            codecs.lookup(charset)
            return raw.decode(charset)
        except LookupError as exc:
            raise FhirReject(INVALID, f"{path}.contentType: unknown charset", expression=[f"{path}.contentType"],
                             issue_type="value") from exc
        except UnicodeError as exc:  # not only UnicodeDecodeError: the "undefined" and "punycode" codecs raise its base
            raise FhirReject(INVALID, f"{path}.data: does not decode as the declared charset",
                             expression=[f"{path}.data"], issue_type="value") from exc
    return ""


def _b64(data: str, path: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FhirReject(INVALID, f"{path}.data: not base64", expression=[f"{path}.data"], issue_type="value") from exc


class _TextOnly(HTMLParser):
    """XHTML narrative → plain text; block elements become line breaks (R4 narrative.html)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS and tag != "br":  # <br/> is one line break, not two
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def narrative_text(report: Any) -> str:
    """The narrative as plain text, when it can be the report.

    R4 narrative.html: a ``generated`` narrative is "entirely generated from the core elements", i.e. a rendering
    of the structured data (subject, dates, codes), not report text; it counts only when it carries report
    headings (FINDINGS:, IMPRESSION: …), as senders that put the report there while labelling it generated do.
    """
    if report.text is None or not report.text.div:
        return ""
    parser = _TextOnly()
    parser.feed(str(report.text.div))
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    text = "\n".join(lines)
    if report.text.status == "generated":
        findings, impression = split_sections(text)
        return text if impression or findings != normalise_whitespace(text) else ""
    return text


def report_texts(report: Any, resolver: Resolver, root: str, codes: dict[str, tuple[str, ...]]
                 ) -> tuple[str, str, str]:
    """``(findings, impression, addendum)`` of one report; ``codes`` maps findings/impression/report → codes."""
    found = observations(report, resolver)
    findings = observation_text(found, codes["findings"])
    conclusion, added = split_addendum(str(report.conclusion or ""))
    impression = conclusion or observation_text(found, codes["impression"])
    whole = ""
    if not findings:
        whole = observation_text(found, codes["report"]) or presented_text(report, root) or narrative_text(report)
        findings, from_text = split_sections(whole)
        impression = impression or from_text
    addendum = presented_text(report, root, addendum=True) or split_addendum(whole)[1] or added
    return normalise_whitespace(findings), normalise_whitespace(impression), normalise_whitespace(addendum)


# An addendum is text added after signing under a heading of its own, last in the report (ACR practice
# parameter for communication of diagnostic imaging findings: addenda are marked and dated, the signed text kept).
_ADDENDUM = re.compile(r"^[ \t\u3000]*[\[【]?(?:ADDEND(?:UM|A)|补充报告|补充说明|补充意见)(?:[ \t]*#?\d+)?[\]】]?"
                       r"[ \t\u3000]*(?:[:：]|$)", re.IGNORECASE | re.MULTILINE)


def split_addendum(text: str) -> tuple[str, str]:
    """``(before, addendum)``: the addendum is what follows its heading (``ADDENDUM:``, ``Addendum 1:``, 补充报告：)."""
    match = _ADDENDUM.search(text)
    return (text[: match.start()].rstrip(), text[match.end():].strip()) if match else (text, "")
