"""``impression-gateway demo``: the options; the walkthrough itself is cli/demo_walkthrough.py.

Input: ``--data-dir``, ``--model-url``, ``--no-history``. Output: the walkthrough's show on stdout; exit 0 when every
report was drafted (posted or withheld) and every final captured, 1 otherwise. The walkthrough (embedded broker, store,
the flow and its model) is imported when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from cli.serve import until_signal


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="serve --embedded on free ports, replay the synthetic sample, show drafts and edits")
    p.add_argument("--data-dir", type=Path, help="where the demo keeps its model, store and logs (default .data)")
    p.add_argument("--model-url", help="use this model worker instead of starting the local vLLM (no history part)")
    p.add_argument("--no-history", dest="history", action="store_false",
                   help="only the live part: no weeks of history, alert, retrain and promotion")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from cli.demo_walkthrough import run_demo
    from consumers import logs

    if args.log_level == "warning":  # the demo's own output is the show; JSON logs only for errors
        logs.configure("error")
    return asyncio.run(until_signal(run_demo(args)))
