"""Normalise report files offline (``normalize``) and count a feed before go-live (``normalize --stats``).

Input: files and directories (in a directory, every file that holds HL7 v2 messages or a FHIR resource/Bundle).
Output: one dict per report — the ``ReportEvent`` JSON, or ``{"path", "index", "error": {"code", "reason"}}`` —
or ``FeedStats`` (accepted/rejected, counts per status, modality, body system, classified_by, top rejections and
notes). Failure modes: none escape; unreadable files, undecodable bytes and rejects become error lines.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gateway.fhir.inbound import parse_fhir
from gateway.hl7 import normalise_oru, split_messages
from gateway.settings import GatewaySettings
from schemas import GatewayError, Reject

MAX_FILE_BYTES = 64 * 1024 * 1024
PROGRESS_FROM = 20  # files: fewer finish before a progress bar would be worth drawing
_SNIFF = 4096
_FRAMING = b"\x0b\x1c\r\n\t \xef\xbb\xbf"


@dataclass(frozen=True)
class Outcome:
    """One message (HL7 v2) or one file (FHIR): the events it gave, or the error."""

    path: Path
    index: int
    events: tuple[dict[str, Any], ...] = ()
    error: dict[str, Any] | None = None


def _error(path: Path, index: int, error: GatewayError) -> Outcome:
    return Outcome(path, index, error={"path": str(path), "index": index,
                                       "error": {"code": error.code, "reason": error.reason}})


def _is_report_file(path: Path) -> bool:
    """In a directory, only files that start like HL7 v2 (MSH) or FHIR JSON (a resourceType) are read."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF).lstrip(_FRAMING)
    except OSError:
        return True  # let the reader report it
    return head.startswith(b"MSH") or (head[:1] in (b"{", b"[") and b'"resourceType"' in head)


def expand(paths: Iterable[Path], is_report: Callable[[Path], bool] | None = None) -> tuple[list[Path], int]:
    """(files to read, files skipped): named files as given; directories walked, hidden entries and files that
    are neither HL7 v2 nor FHIR (goldens, READMEs; ``is_report`` decides where given) left out."""
    is_report = is_report or _is_report_file
    files: list[Path] = []
    skipped = 0
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        for found in sorted(p for p in path.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in found.relative_to(path).parts):
                continue
            if is_report(found):
                files.append(found)
            else:
                skipped += 1
    return files, skipped


def _events(path: Path, data: bytes, settings: GatewaySettings) -> Iterator[Outcome]:
    if data.lstrip()[:1] in (b"{", b"["):
        try:
            events = parse_fhir(data, settings=settings, sender=f"file:{path.name}")
            yield Outcome(path, 0, tuple(json.loads(e.model_dump_json()) for e in events))
        except GatewayError as exc:
            yield _error(path, 0, exc)
        return
    messages = split_messages(data)
    if not messages:
        yield _error(path, 0, Reject("empty", "no HL7 message (MSH segment) found in the file"))
    for index, message in enumerate(messages):
        try:
            yield Outcome(path, index, tuple(json.loads(e.model_dump_json())
                                             for e in normalise_oru(message, settings=settings)))
        except GatewayError as exc:
            yield _error(path, index, exc)


def outcomes(files: list[Path], settings: GatewaySettings, *, progress: bool = False) -> Iterator[Outcome]:
    """Every message of every file, in order; a progress bar on stderr for big runs when stderr is a terminal."""
    bar = tqdm(files, desc="normalize", unit="file", file=sys.stderr, leave=False,
               disable=None if progress and len(files) >= PROGRESS_FROM else True)
    for path in bar:
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                yield _error(path, 0, Reject("file_too_large", f"file exceeds {MAX_FILE_BYTES} bytes"))
                continue
            data = path.read_bytes()
        except OSError as exc:
            yield _error(path, 0, Reject("unreadable", f"cannot read file: {exc.strerror or type(exc).__name__}"))
            continue
        yield from _events(path, data, settings)


def normalize_paths(paths: Iterable[Path], settings: GatewaySettings, *, progress: bool = False
                    ) -> Iterator[dict[str, Any]]:
    """The ``normalize`` command's lines: each event's JSON, or an error line per rejected message."""
    files, _ = expand(paths)
    for outcome in outcomes(files, settings, progress=progress):
        yield from (outcome.events if outcome.error is None else (outcome.error,))


@dataclass
class FeedStats:
    """What an integration engineer reads before go-live: how much of a day's feed the gateway understood."""

    files: int = 0
    skipped_files: int = 0
    messages: int = 0
    rejected: int = 0
    events: int = 0
    several_groups: int = 0  # messages with more than one OBR group (several events)
    status_only: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=lambda: {
        k: Counter() for k in ("status", "modality", "body_system", "classified_by", "language")})
    rejections: Counter[tuple[str, str]] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return self.messages - self.rejected

    def add(self, outcome: Outcome) -> None:
        self.messages += 1
        if outcome.error is not None:
            self.rejected += 1
            error = outcome.error["error"]
            self.rejections[(str(error["code"]), str(error["reason"]))] += 1
            return
        self.events += len(outcome.events)
        self.several_groups += len(outcome.events) > 1
        for event in outcome.events:
            for key, counter in self.counts.items():
                counter[str(event.get(key, "")) or "-"] += 1
            self.status_only += bool(event.get("status_only"))
            self.notes.update(str(n) for n in event.get("notes", []))

    def as_dict(self, top: int = 10) -> dict[str, Any]:
        return {
            "files": self.files, "skipped_files": self.skipped_files, "messages": self.messages,
            "accepted": self.accepted, "rejected": self.rejected, "events": self.events,
            "several_groups": self.several_groups, "status_only": self.status_only,
            **{key: dict(counter.most_common()) for key, counter in self.counts.items()},
            "top_rejections": [{"code": c, "reason": r, "count": n} for (c, r), n in self.rejections.most_common(top)],
            "top_notes": [{"note": note, "count": n} for note, n in self.notes.most_common(top)],
        }

    def render(self, top: int = 10) -> str:
        share = f" ({100 * self.accepted / self.messages:.1f}%)" if self.messages else ""
        lines = [
            f"files          {self.files} read, {self.skipped_files} skipped (neither HL7 v2 nor FHIR)",
            f"messages       {self.messages}: {self.accepted} accepted{share}, {self.rejected} rejected",
            f"events         {self.events} ({self.status_only} status only; {self.several_groups} messages with "
            "several OBR groups)",
        ]
        for key, counter in self.counts.items():
            lines.append(f"{key:<14} " + (", ".join(f"{v} {n}" for v, n in counter.most_common()) or "-"))
        lines.append(f"top rejections ({len(self.rejections)} distinct)" if self.rejections else "top rejections -")
        lines += [f"  {n:>6}  {code}: {reason}" for (code, reason), n in self.rejections.most_common(top)]
        lines.append(f"top notes ({len(self.notes)} distinct)" if self.notes else "top notes -")
        lines += [f"  {n:>6}  {note}" for note, n in self.notes.most_common(top)]
        return "\n".join(lines)


def feed_stats(paths: Iterable[Path], settings: GatewaySettings, *, progress: bool = False) -> FeedStats:
    files, skipped = expand(paths)
    stats = FeedStats(files=len(files), skipped_files=skipped)
    for outcome in outcomes(files, settings, progress=progress):
        stats.add(outcome)
    return stats
