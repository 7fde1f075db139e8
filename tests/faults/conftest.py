"""The fault suite's table: every row's counts, printed in pytest's terminal summary (shown under ``-q`` too).

Rows are recorded by ``tests/faults/test_faults.py`` (the ``fault_table`` fixture) before each row's assertions,
so a failing row is in the table with what it counted.
"""

from __future__ import annotations

import pytest
from _pytest.terminal import TerminalReporter

from tests.harness.fault_traffic import Tally

ROWS = pytest.StashKey[list[Tally]]()
HEADER = pytest.StashKey[str]()  # what every row did (N, outage lengths), set by the suite
COLUMNS = ("row", "reports in", "ACKed", "drafts posted", "withheld", "duplicates", "replaced", "lost", "recovery")


@pytest.fixture(scope="session")
def fault_table(request: pytest.FixtureRequest) -> list[Tally]:
    return request.config.stash.setdefault(ROWS, [])


def table_lines(rows: list[Tally]) -> list[str]:
    cells = [COLUMNS] + [(t.row, str(t.reports_in), str(t.acked), str(t.drafts_posted), str(t.withheld),
                          str(t.duplicates), str(t.replaced), str(t.lost), t.recovery) for t in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def pytest_terminal_summary(terminalreporter: TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    terminalreporter.section("fault suite")
    terminalreporter.write_line(config.stash.get(HEADER, ""))
    for line in table_lines(rows):
        terminalreporter.write_line(line)
    for tally in rows:
        for what, ids in (("lost", tally.lost_ids), ("duplicated", tally.duplicate_ids),
                          ("withheld by the consistency policy", tally.withheld_ids)):
            if ids:
                terminalreporter.write_line(f"{tally.row}: {what} {', '.join(ids[:10])}"
                                            + (f" (+{len(ids) - 10} more)" if len(ids) > 10 else ""))
