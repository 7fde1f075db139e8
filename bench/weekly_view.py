"""Weekly view benchmark: one dashboard page view's data (ops/drift/weekly.py) read from the drift aggregates vs a full
scan of the edit records, on a store of ``--records`` studies (tests/harness/weekly_store.py: 26 weeks, 4 routes).

Times (best of ``--repeat``, wall and CPU seconds) ``weekly_view_records`` (every record parsed: the view before) and
``weekly_view`` (aggregates + narrow rows), unfiltered and filtered by a site, and checks both give the same output.

    python bench/weekly_view.py [--records 50000] [--store sqlite:///PATH | postgresql://…] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select, text  # noqa: E402

from ops.drift.weekly import Filters, weekly_view, weekly_view_records  # noqa: E402
from ops.store import Store, edit_records  # noqa: E402
from tests.harness.weekly_store import fill  # noqa: E402

TODAY = date(2026, 6, 17)


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(best wall s, its CPU s, the result)."""
    runs = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu, result))
    return min(runs, key=lambda r: r[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--store", default="", help="an empty store's URL (default: a new SQLite file)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    url = args.store or f"sqlite:///{Path(tempfile.mkdtemp(prefix='weekly-bench-')) / 'store.db'}"
    store = Store(url).create()
    with store.engine.connect() as conn:
        have = conn.execute(select(func.count()).select_from(edit_records)).scalar_one()
    if not have:
        started = time.perf_counter()
        fill(store, args.records, weeks=26, today=TODAY)
        print(f"filled {args.records} studies in {time.perf_counter() - started:.1f} s ({store.engine.dialect.name})")
        with store.engine.begin() as conn:  # the statistics autovacuum / a DBA would have for the planner
            conn.execute(text("ANALYZE"))
    for label, filters in (("all routes", Filters()), ("site SITE_B", Filters(site="SITE_B"))):
        kwargs: dict[str, Any] = {"filters": filters, "weeks": 26, "today": TODAY}
        before = best(lambda: weekly_view_records(store.engine, **kwargs), args.repeat)  # noqa: B023
        after = best(lambda: weekly_view(store.engine, **kwargs), args.repeat)  # noqa: B023
        same = before[2] == after[2]
        print(f"{label:<12} records scan {before[0]:6.2f} s wall ({before[1]:.2f} CPU) | aggregates {after[0]:6.2f} s "
              f"wall ({after[1]:.2f} CPU) | {before[0] / max(after[0], 1e-9):.1f}x | same output: {same}")
    store.close()


if __name__ == "__main__":
    main()
