"""Browser test of the built-in drift dashboard: the real HTTP app (uvicorn on a loopback port)
over a real SQLite store filled through the real capture → score → aggregate → detect code, driven
in Debian's headless Chromium through chromedriver (W3C WebDriver over HTTP). The numbers and plot
points the page shows must be those of ``/api/drift/summary``; the charts need a dashboard-read token, report text
a report-text-read one (issue 12). The weekly charts (>= 12 weekly points, markers, adapter bands), a filter, route
modes, the dead letters from the real Tansu broker and the replay button (operator scope) over 14 planted weeks
(issue 16)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from kafka import KafkaProducer

from consumers.embedded import EmbeddedBroker
from ops.capture import capture_final
from ops.drift.stage import DriftStage
from ops.drift.status import OpsSources
from ops.replay import Cluster
from ops.retrain.audit import read_audit
from ops.settings import DriftSettings
from ops.store import Store
from schemas import BodySystem, DeadLetter, DraftImpression, Modality, ReportEvent, ReportStatus, Source
from tests.browser import weeks
from tests.browser.served import serving
from tests.harness.webdriver import Browser

READER, TOKEN = "dashboard-reader-test-token", "dashboard-test-token"
TOKENS = json.dumps([{"name": "viewer", "scopes": ["dashboard-read"], "token": READER},
                     {"name": "auditor", "scopes": ["dashboard-read", "report-text-read"], "token": TOKEN}])
READ = {"Authorization": f"Bearer {READER}"}
ROUTES = {"ct_chest": (Modality.CT, BodySystem.CHEST, 30), "xr_chest": (Modality.XR, BodySystem.CHEST, 24),
          "mr_head": (Modality.MR, BodySystem.HEAD, 8)}
SENTENCES = ("Small right pleural effusion.", "No pneumothorax.", "Stable 6 mm nodule in the right upper lobe.",
             "Mild cardiomegaly.", "No acute intracranial abnormality.", "Left lower lobe atelectasis.",
             "No focal consolidation.", "Possible early pneumonia in the left lower lobe.")


def _event(route: str, i: int, status: ReportStatus, impression: str, at: datetime, rng: random.Random) -> ReportEvent:
    modality, body, _ = ROUTES[route]
    return ReportEvent(event_id=f"{route}-{i}-{status.value}", source=Source.HL7V2, message_control_id=f"{route}{i}",
                       accession=f"ACC-{route}-{i}", status=status, site=rng.choice(("SITE_A", "SITE_B")),
                       modality=modality, body_system=body, findings=" ".join(rng.sample(SENTENCES, 4)),
                       impression=impression, radiologist_id=f"RAD{rng.randint(1, 4)}", observed_at=at)


def fill(store: Store, stage: DriftStage, rng: random.Random) -> int:
    """Three weeks of drafts and signed finals per route; ct_chest drafts get worse in the last week."""
    start, count = datetime.now(UTC) - timedelta(days=20), 0
    for route, (_, _, per_week) in ROUTES.items():
        for i in range(per_week * 3):
            at = start + timedelta(days=21 * i / (per_week * 3), minutes=rng.randint(0, 60))
            final = " ".join(rng.sample(SENTENCES, 2))
            worse = route == "ct_chest" and i >= per_week * 2
            text = " ".join(rng.sample(SENTENCES, 2)) if worse or rng.random() < 0.3 else final
            version = "v2" if route == "ct_chest" and i >= per_week else "v1"
            prelim = _event(route, i, ReportStatus.PRELIMINARY, "", at - timedelta(hours=1), rng)
            store.save_draft(DraftImpression(event_id=prelim.event_id, accession=prelim.accession, site=prelim.site,
                                             route=route, text=text, adapter_name=route, adapter_version=version,
                                             model=route, event=prelim, created_at=at - timedelta(hours=1)))
            signed = _event(route, i, ReportStatus.FINAL, final, at, rng)
            record = stage.score(capture_final(signed, store.latest_draft(signed.accession)))
            assert store.save_edit(record)
            stage.observe(record)
            count += 1
    return count


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'dashboard.db'}").create()
    settings = DriftSettings(min_samples=20, reference_size=30, batch=5)
    stage = DriftStage(store, settings, rebuild=False)
    n = fill(store, stage, random.Random(11))

    with serving(store, TOKENS, min_samples=settings.min_samples) as base:
        yield base, n
    store.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    opened = Browser(tmp_path / "profile")
    yield opened
    opened.close()


POINTS = """return [...document.querySelectorAll('#charts circle.point')].map(c => ({route: c.dataset.route,
  window: c.dataset.window, metric: c.dataset.metric, value: Number(c.dataset.value),
  cx: Number(c.getAttribute('cx')), cy: Number(c.getAttribute('cy'))}));"""
ROUTE_ROWS = """return [...document.querySelectorAll('#routes tbody tr')].map(r => [r.dataset.route,
  Object.fromEntries([...r.querySelectorAll('td[data-metric]')].map(td => [td.dataset.metric, td.textContent]))]);"""


def use_token(browser: Browser, token: str) -> None:
    browser.script("document.getElementById('token').value = ''")
    browser.type("#token", token)
    browser.click("#use-token")
    assert browser.wait_for("return document.body.dataset.ready") == "1"


def test_the_dashboard_shows_what_the_summary_says(served: tuple[str, int], browser: Browser, tmp_path: Path) -> None:
    base, n = served
    assert httpx.get(f"{base}/api/drift/summary").status_code == 401
    summary = httpx.get(f"{base}/api/drift/summary", headers=READ).json()
    assert summary["totals"]["n"] == n and summary["alerts"], "the fixture should have raised an alert"
    browser.get(f"{base}/dashboard")
    assert browser.wait_for("return document.body.dataset.ready") == "denied-401"  # no token: nothing drawn
    assert browser.script("return document.querySelectorAll('#charts circle.point').length") == 0
    use_token(browser, READER)
    totals = browser.script("return Object.fromEntries([...document.querySelectorAll('.totals b')]"
                            ".map(b => [b.dataset.metric, b.textContent]))")
    assert int(totals["n"]) == n and int(totals["drafted"]) == summary["totals"]["drafted"]
    for metric in ("rougeL", "ecr", "uer", "accepted"):
        assert float(totals[metric]) == pytest.approx(summary["totals"][metric], abs=5.001e-4)  # shown to 3 decimals
    rows = dict(browser.script(ROUTE_ROWS))
    assert set(rows) == set(ROUTES)
    for route in summary["routes"]:
        shown = rows[route["route"]]
        assert int(shown["n"]) == route["n"] and int(shown["drafted"]) == route["drafted"]
        assert float(shown["rougeL"]) == pytest.approx(route["rougeL"], abs=5.001e-4)  # shown to 3 decimals
    points = browser.script(POINTS)
    expected = {(r, w["window"], m): w[m] for r, ws in summary["series"].items() for w in ws
                for m in ("rougeL", "accepted") if w[m] is not None}
    assert {(p["route"], p["window"], p["metric"]): p["value"] for p in points} == pytest.approx(expected)
    for p in points:  # the drawn height is the value (page.py: y = 10 + (1 - v) * 110)
        assert p["cy"] == pytest.approx(10 + (1 - p["value"]) * 110, abs=0.01)
    worst = browser.script("return [...document.querySelectorAll('#worst li')].map(li => li.dataset.route)")
    assert worst == [w["route"] for w in summary["worst_routes"]] and worst[0] == "ct_chest"
    assert browser.script("return document.querySelectorAll('#alerts tbody tr').length") == len(summary["alerts"])
    adapters = browser.script("return [...document.querySelectorAll('#adapters tbody tr')]"
                              ".map(r => r.cells[1].textContent)")
    assert adapters == [a["adapter"] for a in summary["adapters"]] and "ct_chest@v2" in adapters
    browser.screenshot(tmp_path / "dashboard.png")
    assert (tmp_path / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_drill_down_shows_examples_only_with_the_token(served: tuple[str, int], browser: Browser,
                                                       tmp_path: Path) -> None:
    base, _ = served
    assert httpx.get(f"{base}/api/drift/examples", params={"route": "ct_chest"}).status_code == 401
    api = httpx.get(f"{base}/api/drift/examples", params={"route": "ct_chest"},
                    headers={"Authorization": f"Bearer {TOKEN}"}).json()
    browser.get(f"{base}/dashboard")
    use_token(browser, READER)
    page = browser.script("return document.documentElement.outerHTML")
    assert api["examples"][0]["record_id"] not in page and api["examples"][0]["final"] not in page
    browser.click('a.drill[data-route="ct_chest"]')
    days = httpx.get(f"{base}/api/drift/series", params={"route": "ct_chest"}, headers=READ).json()["day"]
    drawn = browser.wait_for("const c = document.querySelectorAll('#detail-chart circle.point');"
                             "return c.length ? c.length : null")
    assert drawn == sum(1 for d in days for m in ("rougeL", "accepted") if d[m] is not None)
    browser.click("#load-examples")
    assert browser.wait_for("return document.getElementById('examples').dataset.loaded") == "error-403"
    use_token(browser, TOKEN)
    browser.click("#load-examples")
    loaded = browser.wait_for("const l = document.getElementById('examples').dataset.loaded;"
                              "return l && !l.startsWith('error') ? l : null")
    assert int(loaded) == len(api["examples"]) == 10
    shown = browser.script("return [...document.querySelectorAll('#examples .pair')].map(p => p.dataset.record)")
    assert shown == [e["record_id"] for e in api["examples"]]
    finals = browser.script("return [...document.querySelectorAll('#examples .final')].map(p => p.textContent)")
    assert finals == [f"final: {e['final']}" for e in api["examples"]]
    assert TOKEN not in browser.script("return document.documentElement.outerHTML")  # the token is in memory only
    browser.screenshot(tmp_path / "drill-down.png")


# The weekly views (issue 16): 14 weeks planted through the store API (tests/browser/weeks.py), a dead letter on the
# real Tansu broker, an operator token for the replay button.
OPERATOR = "dashboard-operator-test-token"
WEEK_TOKENS = json.dumps([{"name": "viewer", "scopes": ["dashboard-read"], "token": READER},
                          {"name": "oncall-ops", "scopes": ["dashboard-read", "operator"], "token": OPERATOR}])
WEEKLY_POINTS = """return [...document.querySelectorAll('#weekly .route-block')].map(b => [b.dataset.route,
  [...b.querySelectorAll('svg.wchart[data-metric="rougeL"] circle.point')].map(c => c.dataset.week + '|' + c.dataset.n)]);"""


@pytest.fixture(scope="module")
def served_weeks(tmp_path_factory: pytest.TempPathFactory, broker: EmbeddedBroker) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("weeks")
    store = Store(f"sqlite:///{folder / 'weeks.db'}").create()
    weeks.fill(store, registry=folder, per_week=4)
    letter = DeadLetter(stage="normalise", topic="reports.raw", code="hl7_invalid", reason="OBR-25 missing",
                        message_control_id="BROWSER-1", accession="ACC-BROWSER-1", original=b"MSH|^~\\&|X\r",
                        headers={"sender": "RIS^B", "message-control-id": "BROWSER-1"})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    producer.send("reports.raw.dlq", letter.model_dump_json().encode(), key=b"k").get(timeout=30)
    producer.close()
    sources = OpsSources(cluster=Cluster(broker.bootstrap), registry_path=folder / "registry.json")
    with serving(store, WEEK_TOKENS, min_samples=4, sources=sources) as base:
        yield base, folder / "registry.json"
    store.close()


def test_weekly_charts_markers_filters_and_the_replay_button(served_weeks: tuple[str, Path], browser: Browser,
                                                             tmp_path: Path) -> None:
    base, registry = served_weeks
    browser.get(f"{base}/dashboard")
    use_token(browser, READER)
    shown = dict(browser.script(WEEKLY_POINTS))
    assert set(shown) == {"ct_chest", "xr_chest"}
    # the page shows 16 weeks: all 14 planted ones, xr_chest's gap week without a point
    assert len(shown["ct_chest"]) == weeks.WEEKS >= 12 and len(shown["xr_chest"]) == weeks.WEEKS - 1
    promoted = browser.script("return [...document.querySelectorAll('.route-block[data-route=\"ct_chest\"] "
                              "svg.wchart g.marker[data-kind=\"promotion\"]')].map(g => g.dataset.week)")
    promotion_week = shown["ct_chest"][weeks.PROMOTED_WEEK].split("|")[0]
    assert promoted == [promotion_week] * 5  # one marker on each of the route's five charts
    bands = browser.script("return [...document.querySelectorAll('.route-block[data-route=\"ct_chest\"] "
                           "svg.wchart[data-metric=\"rougeL\"] rect.band')].map(r => r.dataset.adapter)")
    assert bands == ["ct_chest@v1", "ct_chest@v2"]
    modes = browser.script("return [...document.querySelectorAll('#modes tbody tr')].map(r => r.dataset.mode)")
    assert modes == ["live"]
    # a filter: only SITE_B, where only ct_chest reads; each week holds half of what it held
    browser.script("const s = document.getElementById('f-site'); s.value = 'SITE_B';"
                   "s.dispatchEvent(new Event('change'));")
    browser.wait_for("return document.getElementById('weekly').dataset.filters === '{\"site\":\"SITE_B\"}'")
    filtered = dict(browser.script(WEEKLY_POINTS))
    assert set(filtered) == {"ct_chest"}
    assert [int(p.split("|")[1]) for p in filtered["ct_chest"]] == [4] * len(filtered["ct_chest"])
    assert [int(p.split("|")[1]) for p in shown["ct_chest"]] == [8] * len(shown["ct_chest"])
    browser.wait_for("return document.querySelector('#dead-letters tbody').dataset.loaded")
    button = 'button.replay[data-source^="reports.raw.dlq@"]'
    assert browser.script(f"return document.querySelectorAll('{button}').length") >= 1
    reasons = browser.script("return [...document.querySelectorAll('#dead-letters tbody tr')].map(r => r.cells[4]"
                             ".textContent)")
    assert "OBR-25 missing" in reasons
    browser.click(button)
    assert browser.wait_for(f"return document.querySelector('{button}').dataset.result") == "error-403"
    use_token(browser, OPERATOR)
    browser.wait_for("return document.querySelector('#dead-letters tbody').dataset.loaded")
    browser.click(button)
    assert browser.wait_for(f"return document.querySelector('{button}').dataset.result") == "sent-1"
    assert [r["who"]["user"] for r in read_audit(registry) if r.get("kind") == "replay"] == ["oncall-ops"]
    browser.screenshot(tmp_path / "weekly.png")
