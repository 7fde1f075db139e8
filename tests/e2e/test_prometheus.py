"""Debian's Prometheus server (``/usr/bin/prometheus``) scraping a running gateway: every Grafana panel's query
answers, the series behind the traffic have samples, the shipped alert rules load and evaluate, and one of them
goes pending on a real outage.

The gateway is ``serve`` as a subprocess (MLLP listener, HTTP app, faust agents in one process) on the real Tansu
broker; its model URL is a loopback port where nothing listens, so requests park (no vLLM needed). The Prometheus
config is the shipped ops/prometheus/prometheus.yml with loopback targets and a 1 s scrape and evaluation
interval; the model-worker job points at a port where nothing listens, as a worker that is down.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from consumers.embedded import EmbeddedBroker
from model.worker.vllm import find_free_port
from tests.conftest import REPO
from tests.e2e.test_flow_e2e import msa, send_mllp
from tests.harness.serving import Served, serve
from tests.unit.test_grafana_panels import panel_exprs

SAMPLE = REPO / "cli" / "sample"
PROMETHEUS_DIR = REPO / "ops" / "prometheus"
pytestmark = pytest.mark.slow
# The series the traffic below makes (and the consumers' lag, there once they consume); every panel over one of them
# must show data.
DRIVEN = ("ig_messages_received_total", "ig_acks_sent_total", "ig_ingest_latency_seconds", "ig_stage_events_total",
          "ig_stage_latency_seconds", "ig_drafts_parked_total", "ig_consumer_lag_messages")


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").is_file() else None)
    if found is None:
        pytest.fail("prometheus is missing: apt-get install -y prometheus (Debian's package; `make venv` installs it)")
    return found


@pytest.fixture(scope="module")
def gateway(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("prom-serve")
    args = ["--kafka-bootstrap", broker.bootstrap, "--model-url", f"http://127.0.0.1:{find_free_port()}",
            "--database-url", f"sqlite:///{workdir / 'store.db'}"]
    env = {"IG_APP_ID": "prometheus-e2e", "IG_RETRIEVAL_FALLBACK": "false", "IG_MODEL_RETRIES": "1",
           "IG_MODEL_TIMEOUT_S": "2", "IG_PARK_BACKOFF_S": "1", "IG_PARK_BACKOFF_MAX_S": "2"}
    with serve(args, workdir, env=env) as served:
        yield served


def loopback_config(gateway_port: int, worker_port: int) -> dict[str, Any]:
    """The shipped config, its targets on loopback: the embedded serve is gateway and consumers in one process
    (one job, so no series counts twice); the model-worker job scrapes a port where nothing listens."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    targets = {"gateway": gateway_port, "model-worker": worker_port}
    scraped = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job.pop("scheme", None)
            job.pop("tls_config", None)  # plain HTTP on loopback in the test
            job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
            scraped.append(job)
    assert {job["job_name"] for job in scraped} == set(targets)
    config["scrape_configs"] = scraped
    return dict(config)


@pytest.fixture
def prometheus(gateway: Served, tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(loopback_config(gateway.http_port, find_free_port())), encoding="utf-8")
    port = find_free_port()
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _ready(url, proc), "Prometheus ready", log_path)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "prometheus exited"
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def eventually(check: Callable[[], Any], what: str, log_path: Path | None = None, timeout_s: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.5)
    tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def api(url: str, path: str, **params: str) -> Any:
    answer = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=10)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", f"{path} {params}: {answer.text}"
    return body["data"]


def query(url: str, expr: str) -> list[dict[str, Any]]:
    data = api(url, "query", query=expr.replace("$route", ".*").replace("$__rate_interval", "1m"))
    return list(data["result"])


def send(served: Served, *names: str, without_obr: str = "") -> None:
    """Sample reports over MLLP, each ACKed AA; ``without_obr``: that one with its OBR removed (refused at intake)."""
    async def go() -> None:
        for name in names:
            assert msa(await send_mllp(served.mllp_port, (SAMPLE / name).read_bytes()))[0] == "AA", name
        if without_obr:
            segments = (SAMPLE / without_obr).read_bytes().split(b"\r")
            broken = b"\r".join(s for s in segments if not s.startswith(b"OBR"))
            assert msa(await send_mllp(served.mllp_port, broken))[0] in {"AE", "AR"}

    asyncio.run(go())


def test_prometheus_scrapes_the_gateway_and_answers_every_panel(gateway: Served, prometheus: str) -> None:
    send(gateway, "01_ct_chest.prelim.hl7", "02_xr_chest.prelim.hl7", "01_ct_chest.final.hl7",
         without_obr="04_us_abdomen.prelim.hl7")

    def up() -> bool:
        targets = api(prometheus, "targets")["activeTargets"]
        return any(t["labels"]["job"] == "gateway" and t["health"] == "up" for t in targets)

    eventually(up, "the gateway target up")
    accepted = 'ig_messages_received_total{job="gateway", source="hl7v2", outcome="accepted"}'
    eventually(lambda: [s for s in query(prometheus, accepted) if float(s["value"][1]) >= 3], "3 accepted messages")
    eventually(lambda: query(prometheus, 'ig_drafts_parked_total{route="ct_chest"}'), "a parked request scraped")
    # A counter's first sample is its value then, so a rate needs traffic after that: more reports, then the rate.
    send(gateway, "02_xr_chest.final.hl7", "04_us_abdomen.prelim.hl7")
    eventually(lambda: query(prometheus, "sum(rate(ig_messages_received_total[5m])) > 0"), "a rate over the traffic")

    empty = []
    for expr in panel_exprs():
        result = query(prometheus, expr)  # asserts the query is valid and answered
        if not result and any(name in expr for name in DRIVEN):
            empty.append(expr)
    assert not empty, f"panels over the traffic's series show nothing: {empty}"
    assert query(prometheus, 'ig_acks_sent_total{code="AA"}') and query(prometheus, "ig_stage_events_total")
    lagging = {s["metric"]["topic"] for s in query(prometheus, "ig_consumer_lag_messages")}
    assert {"reports.raw", "reports.events", "drafts.parked"} <= lagging  # the topics consumed so far
    rejected = query(prometheus, 'ig_messages_received_total{source="hl7v2", outcome="rejected"}')
    assert [float(s["value"][1]) for s in rejected] == [1.0]


def test_the_shipped_rules_load_evaluate_and_fire_on_a_down_worker(gateway: Served, prometheus: str) -> None:
    shipped = {rule["alert"] for group in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
               for rule in group["rules"]}

    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in api(prometheus, "rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r["lastEvaluation"] > "2000" for r in rules) else []

    rules = eventually(evaluated, "every rule evaluated")
    assert {r["name"] for r in rules} == shipped
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]

    def worker_down() -> list[dict[str, Any]]:
        return [a for a in api(prometheus, "alerts")["alerts"] if a["labels"]["alertname"] == "ModelWorkerDown"]

    alert = eventually(worker_down, "ModelWorkerDown pending")[0]
    assert alert["state"] == "pending" and alert["labels"]["severity"] == "critical"  # for: 2m
    assert alert["labels"]["job"] == "model-worker" and alert["annotations"]["summary"].startswith("Model worker 127.0.0.1:")
    assert "runbook_url" in alert["annotations"]
