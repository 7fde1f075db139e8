"""The ``metrics`` command: a CSV or JSONL file of draft/final pairs → one JSON line per pair, or a table.

Input: ``.csv`` (header row) or JSON lines (``.jsonl``/``.ndjson``/``.json``, or a first character ``{``) with
``reference``, ``candidate``, optionally ``findings``, ``language``. Output on ``out``: a metrics line per usable row
and an aggregate line with the methods, or (``table``) the means per language. Failure modes: unusable rows are counted
in ``skipped``; an unreadable file is one ``{"path", "error"}`` line. Exit status: 0 all scored, 1 some skipped, 2 unreadable.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ops.metrics.score import DEFAULTS, Pair, aggregate, methods, score_pairs
from ops.metrics.table import method_lines, render
from ops.settings import MetricsSettings

_JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}


def read_rows(path: Path) -> Iterator[dict[str, Any] | None]:
    """Rows of a CSV (header row) or JSONL file as dicts (None for a JSONL line that is not an object).

    Also used by ``model eval``: one reader for every findings/impression table the CLI takes."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        head = handle.read(1)
        handle.seek(0)
        if path.suffix.lower() in _JSONL_SUFFIXES or (path.suffix.lower() != ".csv" and head == "{"):
            for line in handle:
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        row = None
                    yield row if isinstance(row, dict) else None
        else:
            yield from csv.DictReader(handle)


def _pair(row: dict[str, Any] | None) -> Pair | None:
    if row is None:
        return None
    candidate, reference = row.get("candidate"), row.get("reference")
    if not (isinstance(candidate, str) and isinstance(reference, str) and candidate.strip() and reference.strip()):
        return None
    findings, language = row.get("findings"), row.get("language")
    return Pair(candidate, reference, findings if isinstance(findings, str) else "",
                language if isinstance(language, str) and language.strip() else None)


def run_metrics(path: Path, *, out: TextIO, embeddings: bool = True, table: bool = False,
                settings: MetricsSettings = DEFAULTS) -> int:
    """Score every pair of ``path`` and print JSON lines (or the table); returns the exit status.

    ``embeddings``: also BERTScore and SBERT (English pairs; loads torch and the encoder once)."""
    pairs: list[Pair] = []
    skipped = 0
    try:
        for row in read_rows(path):
            pair = _pair(row)
            if pair is None:
                skipped += 1
            else:
                pairs.append(pair)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        print(json.dumps({"path": str(path), "error": {"code": "unreadable", "reason": f"cannot read file: {reason}"}}), file=out)
        return 2
    scores = score_pairs(pairs, semantic=embeddings, bertscore=embeddings, settings=settings)
    how = methods(settings, semantic=embeddings, bertscore=embeddings)
    if table:
        languages = sorted({s.language for s in scores})
        rows = [(lang, aggregate([s for s in scores if s.language == lang])) for lang in languages]
        notes = f"{len(scores)} pairs scored, {skipped} skipped (no reference or candidate)"
        print("\n".join([notes, *method_lines(how), *render("LANGUAGE", [*rows, ("overall", aggregate(scores))],
                                                           count="pairs")]), file=out)
        return 1 if skipped else 0
    for score in scores:
        print(json.dumps(score.as_dict()), file=out)
    print(json.dumps({"aggregate": True, "skipped": skipped, **aggregate(scores), "methods": how}, ensure_ascii=False),
          file=out)
    return 1 if skipped else 0
