"""``impression-gateway metrics --data FILE [--semantic]`` (drift evaluation, issue 4).

Input: a CSV/JSONL file of draft (``candidate``) / signed final (``reference``) pairs. Output: the
JSON lines of ``ops.metrics.rows.run_metrics``. Failure modes: those of ``run_metrics`` (bad rows
are counted and skipped; an unreadable file is an error line and exit status 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("metrics", help="score drafts against signed finals (ROUGE, BLEU, ECR/UER/FCR, semantic)")
    p.add_argument("--data", type=Path, required=True,
                   help="CSV or JSONL with columns reference, candidate (optional findings, language)")
    p.add_argument("--semantic", action="store_true",
                   help="add sentence-embedding similarity (all-MiniLM-L6-v2, English pairs only; loads torch)")
    p.set_defaults(handler=cmd_metrics)


def cmd_metrics(args: argparse.Namespace) -> int:
    from ops.metrics.rows import run_metrics

    return run_metrics(args.data, semantic=args.semantic, out=sys.stdout)
