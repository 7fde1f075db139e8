"""``model eval``: a synthetic held-out set through the retrieval drafter and through a served adapter.

Real parts only: the command runs as a subprocess (``python -m cli model eval``); the
adapter run drafts with the session's vLLM CPU server (tests/harness/vllm_server.py).
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from model.demo import synthetic
from ops.metrics import score_pair
from tests.conftest import REPO

if TYPE_CHECKING:
    from model.worker.vllm import VllmServer

COLUMNS = ("findings", "impression", "modality", "body_system", "site", "language")


def cli(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "model", "eval", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def as_row(item: synthetic.CorpusItem) -> dict[str, str]:
    return {"findings": item.findings, "impression": item.impression, "modality": item.modality.value,
            "body_system": item.body_system.value, "site": "DEMO", "language": item.language, "accession": "ignored"}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*COLUMNS, "accession"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def table_rows(stdout: str) -> dict[str, dict[str, str]]:
    lines = [line.split() for line in stdout.splitlines() if line.strip()]
    header = next(line for line in lines if line[:2] == ["ROUTE", "N"])
    return {line[0]: dict(zip(header, line, strict=True)) for line in lines[lines.index(header) + 1:]}


def constant_rouge_l(route: str, held_out: list[synthetic.CorpusItem]) -> float:
    """ROUGE-L of always answering the route's most common impression (the baseline to beat)."""
    constant = Counter(item.impression for item in synthetic.generate(route, 300, seed=0)).most_common(1)[0][0]
    return statistics.fmean(score_pair(constant, item.impression, language=item.language).rougeL for item in held_out)


def test_retrieval_eval_prints_per_route_rouge_above_a_constant_and_counts_skipped(tmp_path: Path) -> None:
    past = write_jsonl(tmp_path / "past.jsonl", [as_row(item) for item in synthetic.corpus(300, seed=0)])
    held_out = {route: synthetic.generate(route, 15, seed=1) for route in synthetic.routes()}
    rows = [as_row(item) for items in held_out.values() for item in items]
    rows += [{**rows[0], "findings": ""}, {**rows[1], "impression": "  "}]  # counted and skipped
    data = write_csv(tmp_path / "held_out.csv", rows)

    result = cli("--data", data, "--drafter", "retrieval", "--index", past)
    assert result.returncode == 1, result.stderr  # 1: some rows skipped; the metrics are still printed
    assert "2 skipped" in result.stdout.splitlines()[0]
    table = table_rows(result.stdout)
    assert set(table) == {*synthetic.routes(), "overall"}
    assert table["overall"]["N"] == str(15 * len(held_out))
    for route, items in held_out.items():
        assert table[route]["N"] == "15"
        rouge_l = float(table[route]["ROUGEL"])
        assert rouge_l > constant_rouge_l(route, items) + 0.1, (route, rouge_l)

    as_json = cli("--data", write_jsonl(tmp_path / "held_out.jsonl", rows), "--drafter", "retrieval", "--index", past,
                  "--format", "json")
    summary = json.loads(as_json.stdout)
    assert (summary["drafter"], summary["rows"], summary["skipped"], summary["failed"]) == ("retrieval", 90, 2, {})
    assert summary["overall"]["rougeL"] == pytest.approx(float(table["overall"]["ROUGEL"]), abs=1e-4)
    assert set(summary["routes"]) == set(synthetic.routes())


def test_retrieval_eval_without_index_or_usable_rows_is_refused(tmp_path: Path) -> None:
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"findings": "", "impression": "x"}])
    assert cli("--data", empty, "--drafter", "retrieval").returncode == 2
    refused = cli("--data", empty, "--drafter", "retrieval", "--index", empty)
    assert refused.returncode == 2 and "no row" in refused.stderr


@pytest.mark.slow
def test_adapter_eval_drafts_through_the_served_adapter(vllm_server: VllmServer, tmp_path: Path) -> None:
    items = synthetic.generate("ct_chest", 20, seed=1)
    data = write_jsonl(tmp_path / "ct_chest.jsonl", [as_row(item) for item in items])

    result = cli("--data", data, "--adapter", "ct_chest", "--model-url", vllm_server.url, "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["drafter"], summary["rows"], summary["skipped"], summary["failed"]) == ("ct_chest", 20, 0, {})
    assert list(summary["routes"]) == ["ct_chest"] and summary["overall"]["n"] == 20
    assert summary["routes"]["ct_chest"]["rougeL"] > constant_rouge_l("ct_chest", items) + 0.1

    table = cli("--data", data, "--adapter", "ct_chest", "--model-url", vllm_server.url)
    assert table.returncode == 0, table.stderr
    assert float(table_rows(table.stdout)["ct_chest"]["ROUGEL"]) == pytest.approx(summary["overall"]["rougeL"], abs=1e-4)

    unknown = cli("--data", data, "--adapter", "no_such_adapter", "--model-url", vllm_server.url)
    assert unknown.returncode == 2 and "does not serve" in unknown.stderr
