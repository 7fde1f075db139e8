"""Duplicate removal for the export: exact (normalised text hash) and near (rapidfuzz ratio per route).

Stage: export. Input: (route, findings, impression) of each kept record, de-identified, in store order.
Output: ``None`` for the first of its kind, else ``exact_duplicate`` / ``near_duplicate``. Failure modes: none.
Near matching looks only at the last ``window`` kept records of the same route (bounded cost). Details: ops/README.md.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque

from rapidfuzz import fuzz, process

_NOISE = re.compile(r"[\W_]+")


def text_key(findings: str, impression: str) -> str:
    flat = "\x1f".join(_NOISE.sub("", part.casefold()) for part in (findings, impression))
    return hashlib.sha256(flat.encode("utf-8")).hexdigest()


class Deduplicator:
    """Remembers what was kept; ``check`` says whether a new record repeats it."""

    def __init__(self, *, threshold: float = 97.0, window: int = 2000) -> None:
        self.threshold = threshold
        self.window = window
        self._exact: set[str] = set()
        self._recent: dict[str, deque[str]] = {}

    def check(self, route: str, findings: str, impression: str) -> str | None:
        key = text_key(findings, impression)
        if key in self._exact:
            return "exact_duplicate"
        flat = " ".join(f"{findings}\n{impression}".casefold().split())
        recent = self._recent.setdefault(route, deque(maxlen=self.window))
        if recent and process.extractOne(flat, recent, scorer=fuzz.ratio, score_cutoff=self.threshold):
            return "near_duplicate"
        self._exact.add(key)
        recent.append(flat)
        return None
