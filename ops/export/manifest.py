"""The export manifest: what was selected, what each filter removed, what was written, and its hashes.

Stage: export. Input: the export's arguments, its running tallies and the written files' hashes.
Output: the manifest dict (``manifest.json``). Failure modes: none. It holds no timestamp and the export id is a hash
of arguments and file hashes, so the same store and arguments give the same manifest, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ops.export.quality import FILTERS, QualityLimits
from ops.export.split import SPLIT_NAMESPACE, SPLITS
from schemas import SCHEMA_VERSION

FORMAT = "impression-gateway/chat-jsonl/v1"
DEDUP_REASONS = ("exact_duplicate", "near_duplicate")


@dataclass(frozen=True)
class ExportArgs:
    since: datetime | None = None
    until: datetime | None = None
    route: str | None = None
    site: str | None = None
    limits: QualityLimits = QualityLimits()
    near_threshold: float = 97.0
    near_window: int = 2000

    def selection(self) -> dict[str, Any]:
        return {"since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
                "route": self.route, "site": self.site}


@dataclass
class Tally:
    """Running counts of one export."""

    read: int = 0
    removed: Counter[str] = field(default_factory=Counter)
    kept: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in
                                                                   ("route", "site", "language", "split")})
    preferences: Counter[str] = field(default_factory=Counter)
    replacements: Counter[str] = field(default_factory=Counter)
    prompt_versions: set[str] = field(default_factory=set)

    def keep(self, *, route: str, site: str, language: str, split: str, prompt_version: str) -> None:
        for key, value in (("route", route), ("site", site), ("language", language), ("split", split)):
            self.kept[key][value or "unknown"] += 1
        self.prompt_versions.add(prompt_version)


def build_manifest(args: ExportArgs, tally: Tally, files: dict[str, dict[str, Any]], scanned: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "prompt_versions": sorted(tally.prompt_versions),
        "selection": args.selection(),
        "split": {"by": "patient", "namespace": SPLIT_NAMESPACE, "shares": dict(SPLITS)},
        "dedup": {"exact": "sha256 of case-folded text without whitespace/punctuation",
                  "near": "rapidfuzz ratio within route", "threshold": args.near_threshold, "window": args.near_window},
        "quality_limits": asdict(args.limits),
        "counts": {
            "read": tally.read,
            "kept": sum(tally.kept["split"].values()),
            "removed": {name: tally.removed[name] for name in (*FILTERS, *DEDUP_REASONS)},
            **{f"by_{key}": dict(sorted(c.items())) for key, c in tally.kept.items()},
            "preferences_by_split": dict(sorted(tally.preferences.items())),
        },
        "deid": {"replacements": dict(sorted(tally.replacements.items())),
                 "check": {"passed": True, "lines_scanned": scanned}},
        "files": files,
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {"export_id": f"export-{digest[:16]}", **body}
