"""Which files a backfill reads, what kind each is, and its units from a byte offset on.

Stage: backfill (read). Input: paths (directories read recursively), the gateway settings, the reference index's path.
Output: the file list (``expand``) and per file its ``Unit``s (``BackfillReader.units``). Failure modes: none raised;
a file that is no report file (``not_a_report_file``), too large a JSON document (``file_too_large``) or unreadable
(``unreadable``: its offset stays, so a rerun tries it again) becomes a rejected unit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from gateway.backfill.hl7_files import hl7_units
from gateway.backfill.ndjson import SENDER, first_type, mapped, report_units
from gateway.backfill.resource_index import INDEXED, ResourceIndex
from gateway.backfill.units import Unit, rejected
from gateway.fhir.inbound import parse_fhir
from gateway.files import MAX_FILE_BYTES
from gateway.files import expand as expand_files
from gateway.settings import GatewaySettings
from schemas import GatewayError, Reject

# Kinds: HL7 v2 (starts with MSH, FHS or BHS, framed or not: hl7_files), NDJSON (.ndjson/.jsonl, or more than one
# JSON line: ndjson; files of referenceable types feed the index, DiagnosticReport files are the reports), and one
# FHIR JSON document per file (a DiagnosticReport or a Bundle, read as the FHIR endpoint reads a POST).

_SNIFF = 4096
_FRAMING = b"\x0b\x1c\r\n\t \xef\xbb\xbf"
_NDJSON_SUFFIXES = frozenset({".ndjson", ".jsonl"})
_FIRST_LINE_LIMIT = 64 * 1024 * 1024
_REPORTS = frozenset({"DiagnosticReport", ""})  # "": a first line that is no resource; each line is judged on its own


def sniff(path: Path) -> str:
    """``hl7``, ``ndjson``, ``json``, or ``""`` (not a report file)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF).lstrip(_FRAMING)
            if head[:3] in (b"MSH", b"FHS", b"BHS"):
                return "hl7"
            if head[:1] not in (b"{", b"["):
                return ""
            if path.suffix.lower() in _NDJSON_SUFFIXES:
                return "ndjson"
            if path.suffix.lower() == ".json" or head[:1] == b"[":
                return "json"
            handle.seek(0)
            first = handle.readline(_FIRST_LINE_LIMIT)
            rest = handle.read(_SNIFF).strip()
    except OSError:
        return "json"  # let the reader report it
    try:
        json.loads(first)
    except (ValueError, RecursionError):
        return "json"  # a document over several lines
    return "ndjson" if rest[:1] == b"{" else "json"


def _is_report_file(path: Path) -> bool:
    """In a directory: HL7 v2, or JSON that names a ``resourceType`` near its start (not a manifest, not a README)."""
    kind = sniff(path)
    if kind in ("", "hl7"):
        return bool(kind)
    try:
        with path.open("rb") as handle:
            return b'"resourceType"' in handle.read(_SNIFF)
    except OSError:
        return True


def expand(paths: Iterable[Path]) -> tuple[list[Path], int]:
    """(files to read, files skipped): as ``gateway.files.expand`` with this reader's sniffing (NDJSON too), each
    file once."""
    files, skipped = expand_files(paths, _is_report_file)
    unique = {p.resolve(): p for p in reversed(files)}  # a file named twice (or inside a folder named too): once
    return [p for p in files if unique.get(p.resolve()) is p], skipped


class BackfillReader:
    """The source of a backfill run over ``files`` (all of them: a report file's references may be in any)."""

    def __init__(self, files: Iterable[Path], settings: GatewaySettings, index_path: Path):
        self.files = list(files)
        self.settings = settings
        self.index_path = index_path
        self._kinds: dict[Path, str] = {}
        self._index: ResourceIndex | None = None

    def kind(self, path: Path) -> str:
        """``hl7``, ``json``, ``reports`` (DiagnosticReport NDJSON), ``references`` (NDJSON of what reports reference),
        ``other`` (NDJSON of any other type) or ``""``."""
        if path not in self._kinds:
            kind = sniff(path)
            if kind == "ndjson":
                resource = first_type(path)
                kind = "references" if resource in INDEXED else "reports" if resource in _REPORTS else "other"
            self._kinds[path] = kind
        return self._kinds[path]

    def index(self) -> ResourceIndex:
        """The reference index over every referenceable NDJSON file of the run, built on first use."""
        if self._index is None:
            self._index = ResourceIndex(self.index_path)
            self._index.ensure(p for p in self.files if p.is_file() and self.kind(p) == "references")
        return self._index

    def units(self, path: Path, start: int = 0) -> Iterator[Unit]:
        """The units of ``path`` from byte ``start`` on (``start`` is 0 or an ``end`` an earlier read yielded)."""
        try:
            kind, size = self.kind(path), path.stat().st_size
        except OSError as exc:
            yield rejected(start, Reject("unreadable", f"cannot read the file: {exc.strerror or type(exc).__name__}"))
            return
        if not kind:
            yield rejected(size, Reject("not_a_report_file", "neither HL7 v2 (MSH, FHS or BHS first) nor FHIR JSON "
                                        "or NDJSON"))
            return
        try:
            yield from self._read(path, kind, start, size)
        except OSError as exc:
            yield rejected(start, Reject("unreadable", f"cannot read the file: {exc.strerror or type(exc).__name__}"))

    def _read(self, path: Path, kind: str, start: int, size: int) -> Iterator[Unit]:
        if kind == "references":
            self.index()
            yield Unit(size)  # read into the index: nothing of its own to store
            return
        if kind == "other":
            yield rejected(size, Reject("ndjson_other_type", "an NDJSON file of a resource type that is neither a "
                                        "DiagnosticReport nor one a report references"))
            return
        if kind == "json":
            yield self._document(path, size)
            return
        resolve = self.index().lookup if kind == "reports" else None
        with mapped(path) as data:
            if resolve is None:
                yield from hl7_units(data, start, self.settings)
            else:
                yield from report_units(data, start, self.settings, resolve)

    def _document(self, path: Path, size: int) -> Unit:
        if size > MAX_FILE_BYTES:
            return rejected(size, Reject("file_too_large", f"a JSON document over {MAX_FILE_BYTES} bytes (send "
                                         "an export as NDJSON)"))
        try:
            events = tuple(parse_fhir(path.read_bytes(), settings=self.settings, sender=SENDER))
        except GatewayError as exc:
            return rejected(size, exc)
        return Unit(size, events, control_id=events[0].message_control_id, accession=events[0].accession)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
