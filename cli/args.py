"""Argument helpers shared by every command group: dates, durations, options that mirror settings, refusals.

Input: command-line text and the settings classes. Output: typed values, help text naming each
option's environment variable and default (from the settings field, so the two cannot disagree),
settings objects. Failure modes: a malformed value → ``argparse.ArgumentTypeError`` (argparse
prints it and exits 2); ``refuse`` prints one JSON line on stderr and returns exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from model.settings import ModelSettings, WorkerSettings
from ops import settings as ops_settings


def duration_s(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s`` → seconds."""
    try:
        return ops_settings.duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def day(text: str) -> datetime:
    """``YYYY-MM-DD`` → midnight UTC of that day."""
    try:
        return ops_settings.utc_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def picked(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The options the user gave (not None), by name: they override the environment."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def env_names(cls: type[BaseSettings], field: str) -> tuple[str, ...]:
    """The environment variables that set ``cls.<field>``, the documented one first."""
    alias = cls.model_fields[field].validation_alias
    names = [c for c in alias.choices if isinstance(c, str)] if isinstance(alias, AliasChoices) else []
    names += [alias] if isinstance(alias, str) else []
    if not names or cls.model_config.get("populate_by_name"):
        names.append(f"{cls.model_config.get('env_prefix', '')}{field}")
    return tuple(dict.fromkeys(name.upper() for name in names))


def _shown(value: Any) -> str:
    if value is None or value == "" or value == ():
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return ",".join(map(str, value)) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) else str(value)


def env_help(cls: type[BaseSettings], field: str, text: str | None = None, default: str | None = None) -> str:
    """``<text, else the field's description> (env NAME, default D)`` for an option that sets ``field``."""
    info = cls.model_fields[field]
    shown = default if default is not None else _shown(info.default)
    return f"{text or info.description} (env {env_names(cls, field)[0]}, default {shown})".replace("%", "%%")


def add_setting(p: argparse.ArgumentParser, flag: str, cls: type[BaseSettings], field: str, *,
                text: str | None = None, default: str | None = None, **kwargs: Any) -> None:
    """An option that overrides ``cls.<field>`` (dest = the field name; None when not given)."""
    if kwargs.get("action") == "store_true":
        kwargs.setdefault("default", None)  # not given → the environment decides
    elif "choices" not in kwargs:
        kwargs.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
    p.add_argument(flag, dest=field, help=env_help(cls, field, text, default), **kwargs)


def add_registry_options(p: argparse.ArgumentParser) -> None:
    add_setting(p, "--registry", ModelSettings, "adapter_registry", type=Path,
                default="<data-dir>/adapters/registry.json")
    add_setting(p, "--data-dir", ModelSettings, "data_dir", type=Path)


MODEL_OPTIONS = ("model_url", "data_dir", "adapter_registry")


def model_settings(args: argparse.Namespace, worker: WorkerSettings | None = None) -> ModelSettings:
    """``ModelSettings`` from the environment, with ``--model-url`` / ``--data-dir`` / ``--registry`` when given."""
    return ModelSettings(**picked(args, MODEL_OPTIONS), **({"worker": worker} if worker else {}))


def refuse(reason: str) -> int:
    print(json.dumps({"error": "refused", "reason": reason}), file=sys.stderr)
    return 2
