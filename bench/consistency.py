"""Consistency-check benchmark: precision and recall per flag kind on a labelled set of findings/draft pairs.

The set (``tests/fixtures/consistency/pairs.jsonl``, English and Chinese, written by hand) labels each pair with the
flag kinds a careful reader would raise (none for a consistent draft), and why. A kind counts per pair: predicted when
the checker raises at least one flag of that kind. Prints one line per kind (TP, FP, FN, precision, recall), the
pairs with any disagreement (``--show``), and the checker's speed over the set.

    python bench/consistency.py [--pairs tests/fixtures/consistency/pairs.jsonl] [--show] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ops.consistency import check
from schemas import FlagKind

PAIRS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "consistency" / "pairs.jsonl"


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(pairs: list[dict[str, Any]]) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Per kind: tp, fp, fn, precision, recall (None-free: 1.0 when nothing was predicted or expected); and the
    pairs the checker disagrees on."""
    counts = {kind.value: {"tp": 0, "fp": 0, "fn": 0} for kind in FlagKind}
    wrong = []
    for pair in pairs:
        flags = check(pair["draft"], pair["findings"])
        got, want = {f.kind.value for f in flags}, set(pair["flags"])
        for kind, c in counts.items():
            c["tp"] += kind in got and kind in want
            c["fp"] += kind in got and kind not in want
            c["fn"] += kind in want and kind not in got
        if got != want:
            wrong.append({**pair, "got": sorted(got), "notes": [f.note() for f in flags]})
    table: dict[str, dict[str, float]] = {}
    for kind, c in counts.items():
        table[kind] = {**c, "precision": c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0,
                       "recall": c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0}
    return table, wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--show", action="store_true", help="print the pairs the checker disagrees on")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()
    pairs = load(args.pairs)
    check("warm up", "the lexicon")  # loading the lexicon is not the check's speed
    started = time.perf_counter()
    table, wrong = evaluate(pairs)
    elapsed = time.perf_counter() - started
    languages = {lang: sum(p["language"] == lang for p in pairs) for lang in sorted({p["language"] for p in pairs})}
    if args.json:
        print(json.dumps({"pairs": len(pairs), "languages": languages, "kinds": table, "disagree": len(wrong),
                          "seconds": round(elapsed, 4)}))
        return 0
    print(f"{len(pairs)} labelled pairs ({', '.join(f'{n} {lang}' for lang, n in languages.items())}), "
          f"{sum(not p['flags'] for p in pairs)} consistent")
    print(f"{'kind':<12} {'TP':>3} {'FP':>3} {'FN':>3}  precision  recall")
    for kind, row in table.items():
        print(f"{kind:<12} {row['tp']:>3} {row['fp']:>3} {row['fn']:>3}  {row['precision']:>9.3f}  {row['recall']:>6.3f}")
    print(f"pairs with any disagreement: {len(wrong)}; checked in {elapsed * 1000:.1f} ms "
          f"({elapsed / max(len(pairs), 1) * 1000:.2f} ms per pair, both texts)")
    if args.show:
        for pair in wrong:
            print(f"\n{pair['id']} want {pair['flags']} got {pair['got']}  ({pair['why']})")
            for note in pair["notes"]:
                print(f"    {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
