"""Argument helpers shared by every command group: dates, durations, the registry options, refusals.

Input: command-line text. Output: typed values or settings objects. Failure modes: a malformed
value → ``argparse.ArgumentTypeError`` (argparse prints it and exits 2); ``refuse`` prints one JSON
line on stderr and returns exit status 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from model.settings import ModelSettings

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s`` → seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number and one of s, m, h, d (e.g. 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def day(text: str) -> datetime:
    """``YYYY-MM-DD`` → midnight UTC of that day."""
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected YYYY-MM-DD") from exc


def picked(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The options the user gave (not None), by name: they override the environment."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def add_registry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, help="adapter registry file (env IG_MODEL_ADAPTER_REGISTRY; "
                   "default <data-dir>/adapters/registry.json)")
    p.add_argument("--data-dir", type=Path, help="data directory (env IG_MODEL_DATA_DIR, default .data)")


def model_settings(args: argparse.Namespace) -> ModelSettings:
    """``ModelSettings`` from the environment, with ``--data-dir`` / ``--registry`` when given."""
    given = {"data_dir": getattr(args, "data_dir", None), "adapter_registry": getattr(args, "registry", None)}
    return ModelSettings(**{k: v for k, v in given.items() if v is not None})


def refuse(reason: str) -> int:
    print(json.dumps({"error": "refused", "reason": reason}), file=sys.stderr)
    return 2
