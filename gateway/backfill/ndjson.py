"""FHIR Bulk Data NDJSON: one resource per line, each DiagnosticReport normalised with the Observations it references.

Stage: backfill (read). Input: a DiagnosticReport NDJSON file from an offset on, and a lookup of what its references
name (``ResourceIndex``). Output: one ``Unit`` per line. Failure modes: none raised; a line that is not JSON
(``ndjson_bad_line``), not a DiagnosticReport (``ndjson_mixed_types``), whose ``result`` names an Observation no file
holds (``fhir_unresolved_result``), or that ``parse_fhir`` rejects becomes a rejected unit (offsets and ids only).
"""

from __future__ import annotations

import json
import mmap
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.backfill.units import Data, Unit, rejected
from gateway.fhir.inbound import parse_fhir
from gateway.fhir.references import split_reference
from gateway.fhir.validate import safe_token
from gateway.settings import GatewaySettings
from schemas import GatewayError, Reject

# FHIR R4 nd-json.html: resources serialised without whitespace, one per line, every line of a file the same type;
# lines end in LF or CRLF. Bulk Data Access IG (export): Observations come in their own Observation.ndjson, so a
# report's ``result`` is resolved across files. The report goes to ``parse_fhir`` as the live FHIR endpoint takes it:
# alone, or in a ``collection`` Bundle with the resources it references (the live parser resolves ``Type/id`` there).
# The sender of every FHIR event, as the live FHIR endpoint names it (gateway/http.py SENDER): the same resource
# backfilled or POSTed gets the same event id.

SENDER = "fhir"
_BOM = b"\xef\xbb\xbf"
_SPACE = b" \t\r\n"
_REFERENCES = ("result", "subject", "performer", "resultsInterpreter", "basedOn")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # R4 datatypes.html#id: an id, fit to name in a reason
Resolve = Callable[[Sequence[str]], dict[str, bytes]]


@contextmanager
def mapped(path: Path) -> Iterator[Data]:
    """The file's bytes, memory-mapped (an empty file: ``b""``, which mmap refuses)."""
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            yield b""
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield data


def json_lines(data: Data, start: int) -> Iterator[tuple[int, int, bytes]]:
    """``(begin, end, line)`` of every non-blank line from ``start``; ``end`` is where the next line begins."""
    size = len(data)
    position = len(_BOM) if start == 0 and data[:3] == _BOM else start
    while position < size:
        newline = data.find(b"\n", position)
        end = size if newline < 0 else newline + 1
        line = bytes(data[position:end]).strip(_SPACE)
        if line:
            yield position, end, line
        position = end


def first_type(path: Path) -> str:
    """The ``resourceType`` of a file's first line ("" when it is not a FHIR resource): the file's type."""
    with mapped(path) as data:
        for _, _, line in json_lines(data, 0):
            try:
                resource = json.loads(line)
            except (ValueError, RecursionError):
                return ""
            kind = resource.get("resourceType") if isinstance(resource, dict) else None
            return kind if isinstance(kind, str) else ""
    return ""


def _keys(value: Any) -> list[str]:
    """``Type/id`` of each literal reference in one element (a Reference or a list of them); contained ``#id`` and
    logical (identifier-only) references are the live parser's to read."""
    refs = value if isinstance(value, list) else [value]
    out = []
    for ref in refs:
        literal = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(literal, str) and not literal.startswith("#"):
            kind, rid = split_reference(literal)
            if kind:
                out.append(f"{kind}/{rid}")
    return out


def _named(key: str) -> str:
    kind, _, rid = key.partition("/")
    return key if _FHIR_ID.fullmatch(rid) else f"an {kind}"


def _report(line: bytes, begin: int, end: int, settings: GatewaySettings, resolve: Resolve) -> Unit:
    try:
        resource = json.loads(line)
    except (ValueError, RecursionError):
        return rejected(end, Reject("ndjson_bad_line", f"the line at byte {begin} is not JSON"))
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if kind != "DiagnosticReport":
        return rejected(end, Reject("ndjson_mixed_types", f"the line at byte {begin} is {safe_token(kind)} in a "
                                    "DiagnosticReport file (FHIR nd-json: one resource type per file)"))
    rid = str(resource.get("id") or "")
    results = _keys(resource.get("result"))
    found = resolve(sorted({k for field in _REFERENCES for k in _keys(resource.get(field))}))
    missing = [k for k in results if k not in found]
    if missing:
        return rejected(end, Reject("fhir_unresolved_result", f"DiagnosticReport.result: {_named(missing[0])} "
                                    "is in no NDJSON file given (add the export's Observation files, run again "
                                    "with --restart)",
                                    message_control_id=rid))
    body = line if not found else b"".join((b'{"resourceType":"Bundle","type":"collection","entry":[{"resource":',
                                            line, *(b'},{"resource":' + found[k] for k in sorted(found)), b"}]}"))
    try:
        events = tuple(parse_fhir(body, settings=settings, sender=SENDER))
    except GatewayError as exc:
        return rejected(end, exc)
    return Unit(end, events, control_id=events[0].message_control_id, accession=events[0].accession)


def report_units(data: Data, start: int, settings: GatewaySettings, resolve: Resolve) -> Iterator[Unit]:
    """One unit per DiagnosticReport line of ``data`` from byte ``start``."""
    for begin, end, line in json_lines(data, start):
        yield _report(line, begin, end, settings, resolve)
