"""The adapter registry as it stands: a JSON manifest beside the adapters it names.

Stage: infer (versions stamped on drafts), serve (which adapters to load), retrain/promote (writes).
Input: a ``manifest.json`` path. Output: ``AdapterEntry`` rows (name → route, version, peft dir,
rank) and a name → version map for ``DraftImpression.adapter_version``.
Failure modes: ``ManifestError`` for a manifest that exists but is malformed; a missing manifest is
not an error for ``adapter_versions`` (drafts then carry an empty version).

Shape (written by ``model.demo_build``; a promotion writes the same)::

    {"served_model_name": "base", "base": "base", "recipe": "<hash>",
     "adapters": {"ct_chest": {"route": "ct_chest", "version": "demo-…", "path": "adapters/ct_chest", "rank": 8}}}

Paths are relative to the manifest's directory, so a built model can be moved or copied whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """The manifest exists but cannot be read as the shape above."""


@dataclass(frozen=True)
class AdapterEntry:
    name: str
    route: str
    version: str
    path: Path
    rank: int


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest as JSON; ``FileNotFoundError`` when absent, ``ManifestError`` when malformed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ManifestError(f"{path}: not JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("adapters", {}), dict):
        raise ManifestError(f"{path}: expected an object with an 'adapters' object")
    return data


def adapter_entries(path: Path) -> tuple[AdapterEntry, ...]:
    """The adapters a manifest names, paths resolved against its directory, sorted by name."""
    data, root = read_manifest(path), Path(path).parent
    try:
        return tuple(
            AdapterEntry(str(name), str(entry["route"]), str(entry.get("version", "")), root / entry["path"], int(entry["rank"]))
            for name, entry in sorted(data.get("adapters", {}).items())
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{path}: adapter entry without a valid {exc}") from None


def adapter_versions(path: Path | None) -> dict[str, str]:
    """Adapter name → version; empty when there is no manifest at ``path``."""
    if path is None or not Path(path).is_file():
        return {}
    return {entry.name: entry.version for entry in adapter_entries(path)}


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
