"""Which prompt template each served adapter was trained with, kept current while the consumers run.

Stage: infer (``InferenceClient`` reads it before rendering). Input: the adapter registry file, the route → adapter
names the client started with. Output: adapter name → template (``bind_prompt`` applies it). Failure modes: an
unreadable or half-written registry keeps the bindings last read (logged with the path only).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import structlog

from model.adapters import registry

log = structlog.get_logger("model.inference.prompt_bindings")


class PromptBindings:
    """Re-read on change because a promotion while running changes the route's serving adapter in the registry and the
    worker supervisor serves it under the route's start-time name at once (model/worker/supervisor.py): without the
    re-read, an adapter chosen by ``retrain --prompt-candidates`` drafts with its predecessor's prompt until restart."""

    def __init__(self, path: Path | None, started: Mapping[str, str], initial: Mapping[str, str] | None = None):
        self.path, self._started = path, dict(started)  # route key → the adapter name the client sends
        self._bindings, self._seen = dict(initial or {}), self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat() if self.path is not None else None
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size) if stat is not None else None

    def current(self) -> Mapping[str, str]:
        """The bindings, re-read when the registry file changed since the last look (one ``stat`` per draft)."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen or self.path is None:
            return self._bindings
        try:
            loaded = registry.load_registry(self.path)
        except (OSError, ValueError) as exc:  # a writer mid-way, or a damaged file: keep what was read before
            log.warning("prompt_bindings_unreadable", path=str(self.path), error=type(exc).__name__)
            return self._bindings
        bindings = loaded.bound_prompts()
        for entry in loaded.serving():
            name = self._started.get(entry.route)
            if name and name != entry.name:  # promoted since start: served under the start-time name
                if entry.prompt:
                    bindings[name] = entry.prompt
                else:
                    bindings.pop(name, None)
        self._bindings, self._seen = bindings, stamp
        return bindings
