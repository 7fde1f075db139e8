"""The adapter registry: which LoRA adapter, of which version, serves which route, as a JSON file.

Stage: serve (which adapters vLLM loads), retrain (registers candidates), infer (versions on drafts).
Input: the registry file (default ``<data_dir>/adapters/registry.json``) or the demo build's ``manifest.json``.
Output: a frozen ``Registry`` of ``RegistryEntry`` rows; ``Registry.serving_adapter(route)`` resolves a route.
Failure modes: ``ManifestError`` for a malformed file; a missing file reads as empty. File format: model/README.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

MANIFEST_NAME = "manifest.json"
REGISTRY_FORMAT = 1
STATUSES = ("serving", "candidate", "retired")
Status = Literal["serving", "candidate", "retired"]
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path")  # re-saving a base changes these only


class ManifestError(ValueError):
    """A manifest or registry file exists but cannot be read as the documented shape."""


@dataclass(frozen=True)
class AdapterEntry:
    name: str
    route: str
    version: str
    path: Path
    rank: int


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    route: str
    version: str
    path: Path
    base_path: Path
    base_config_sha256: str
    export_id: str
    status: Status
    created_at: str
    scores: Mapping[str, float] = field(default_factory=dict, hash=False)
    # The prompt template the adapter was trained with (retrain's prompt selection); drafts with this adapter are
    # prompted with it, whatever the routing table names. Empty: the routing table's prompt (the demo adapters).
    prompt: str = ""


@dataclass(frozen=True)
class Registry:
    path: Path
    entries: tuple[RegistryEntry, ...] = ()
    base_path: Path | None = None
    base_config_sha256: str = ""
    served_model_name: str = "base"
    identity_adapter: Path | None = None

    def get(self, name: str) -> RegistryEntry | None:
        return next((entry for entry in self.entries if entry.name == name), None)

    def serving(self) -> tuple[RegistryEntry, ...]:
        return tuple(entry for entry in self.entries if entry.status == "serving")

    def serving_adapter(self, route: str) -> RegistryEntry | None:
        """The adapter serving ``route``, or None (the route then drafts with the base model)."""
        return next((entry for entry in self.serving() if entry.route == route), None)

    def bound_prompts(self) -> dict[str, str]:
        """Adapter name → the prompt template it was trained with, for the adapters that record one."""
        return {entry.name: entry.prompt for entry in self.entries if entry.prompt}

    def with_entry(self, entry: RegistryEntry) -> Registry:
        """This registry with ``entry`` added, or replacing the entry of the same name."""
        kept = tuple(e for e in self.entries if e.name != entry.name)
        return replace(self, entries=tuple(sorted((*kept, entry), key=lambda e: (e.route, e.created_at, e.name))))


def config_sha256(base_dir: Path) -> str:
    """Hash of a base model's ``config.json`` (canonical JSON, without keys that re-saving changes)."""
    config = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    stable = {k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _entry(raw: Mapping[str, Any], root: Path) -> RegistryEntry:
    status = str(raw.get("status", ""))
    if status not in STATUSES:
        raise ManifestError(f"adapter {raw.get('name')!r}: status {status!r} is not one of {STATUSES}")
    base = raw.get("base") or {}
    return RegistryEntry(
        name=str(raw["name"]), route=str(raw["route"]), version=str(raw["version"]), path=(root / raw["path"]).resolve(),
        base_path=(root / base.get("path", ".")).resolve(), base_config_sha256=str(base.get("config_sha256", "")),
        export_id=str(raw.get("export_id", "")), status=cast(Status, status), created_at=str(raw.get("created_at", "")),
        scores={str(k): float(v) for k, v in (raw.get("scores") or {}).items()}, prompt=str(raw.get("prompt") or ""),
    )


def load_registry(path: Path) -> Registry:
    """The registry at ``path``; an empty one when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return Registry(path)
    data, root = read_manifest(path), path.resolve().parent
    base = data.get("base") or {}
    try:
        entries = tuple(_entry(raw, root) for raw in data.get("adapters", []))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(f"{path}: adapter entry without a valid {exc}") from None
    serving_routes = [entry.route for entry in entries if entry.status == "serving"]
    if len(serving_routes) != len(set(serving_routes)):
        raise ManifestError(f"{path}: more than one serving adapter for a route")
    identity = base.get("identity_adapter")
    return Registry(path, entries, (root / base["path"]).resolve() if base.get("path") else None,
                    str(base.get("config_sha256", "")), str(base.get("served_model_name", "base")),
                    (root / identity).resolve() if identity else None)


def _rel(path: Path, root: Path) -> str:
    """Relative to the registry's directory when both lie in one tree (not only under ``/``), else absolute."""
    target, root = Path(path).resolve(), root.resolve()
    return os.path.relpath(target, root) if os.path.commonpath([target, root]) != "/" else str(target)


def _entry_json(entry: RegistryEntry, root: Path) -> dict[str, Any]:
    out = {"name": entry.name, "route": entry.route, "version": entry.version, "path": _rel(entry.path, root),
           "base": {"path": _rel(entry.base_path, root), "config_sha256": entry.base_config_sha256},
           "export_id": entry.export_id, "scores": dict(entry.scores), "status": entry.status, "created_at": entry.created_at}
    return out | ({"prompt": entry.prompt} if entry.prompt else {})  # absent when unbound: older readers see no change


def save_registry(registry: Registry) -> None:
    """Write atomically (temp file + rename), so a reader never sees half a registry."""
    root = registry.path.parent
    root.mkdir(parents=True, exist_ok=True)
    base = {"path": _rel(registry.base_path, root) if registry.base_path else None,
            "config_sha256": registry.base_config_sha256, "served_model_name": registry.served_model_name,
            "identity_adapter": _rel(registry.identity_adapter, root) if registry.identity_adapter else None}
    data = {"format": REGISTRY_FORMAT, "base": base, "adapters": [_entry_json(e, root) for e in registry.entries]}
    staging = registry.path.with_name(registry.path.name + ".tmp")
    write_manifest(staging, data)
    staging.replace(registry.path)


def update_registry(path: Path, change: Callable[[Registry], Registry]) -> Registry:
    """Read, change and write the registry under an exclusive file lock (trainers may run at once)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(Path(path).with_name(Path(path).name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        save_registry(change(load_registry(path)))
        return load_registry(path)  # as a reader will see it (paths resolved)


def seed_from_manifest(manifest_path: Path, registry_path: Path) -> Registry:
    """Register the demo manifest's adapters: new ones serve (unless their route already has a serving
    adapter), known names get the rebuilt version and scores and keep their status."""
    manifest, root = read_manifest(manifest_path), Path(manifest_path).parent
    base_dir = root / str(manifest.get("base", "base"))
    base_hash = config_sha256(base_dir)

    def seed(registry: Registry) -> Registry:
        identity = manifest.get("identity_adapter")
        registry = replace(registry, base_path=registry.base_path or base_dir,
                           base_config_sha256=registry.base_config_sha256 or base_hash,
                           served_model_name=str(manifest.get("served_model_name", registry.served_model_name)),
                           identity_adapter=registry.identity_adapter or (root / identity if identity else None))
        for adapter in adapter_entries(manifest_path):
            raw = manifest["adapters"][adapter.name]
            known = registry.get(adapter.name)
            status: Status = known.status if known else ("candidate" if registry.serving_adapter(adapter.route) else "serving")
            scores = {k: float(raw[k]) for k in ("eval_loss_base", "eval_loss_adapter") if k in raw}
            registry = registry.with_entry(RegistryEntry(
                adapter.name, adapter.route, adapter.version, adapter.path, base_dir, base_hash, "synthetic-demo",
                status, known.created_at if known and known.version == adapter.version else now_utc(), scores))
        return registry

    return update_registry(registry_path, seed)


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest (or registry) file as JSON; ``FileNotFoundError`` when absent, ``ManifestError`` when malformed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ManifestError(f"{path}: not JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("adapters", {}), dict | list):
        raise ManifestError(f"{path}: expected an object with an 'adapters' object or list")
    return data


def adapter_entries(path: Path) -> tuple[AdapterEntry, ...]:
    """The adapters a demo manifest names, paths resolved against its directory, sorted by name."""
    data, root = read_manifest(path), Path(path).parent
    try:
        return tuple(
            AdapterEntry(str(name), str(entry["route"]), str(entry.get("version", "")), root / entry["path"], int(entry["rank"]))
            for name, entry in sorted(data.get("adapters", {}).items())
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(f"{path}: adapter entry without a valid {exc}") from None


def adapter_versions(path: Path | None) -> dict[str, str]:
    """Adapter name → version, from a demo manifest or a registry file; empty when there is none at ``path``."""
    if path is None or not Path(path).is_file():
        return {}
    if isinstance(read_manifest(path).get("adapters"), list):
        return {entry.name: entry.version for entry in load_registry(path).entries}
    return {entry.name: entry.version for entry in adapter_entries(path)}


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
