"""Golden routing samples: every route of the routing tables (model/inference/routes.toml, cli/demo_routes.toml) has a
preliminary report under tests/fixtures/routes/<route>.hl7 that the gateway normalises and the table sends to it.

Adding a route is a data change (the routes.toml header): add its row and its sample here; this test fails until both
exist and agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.hl7 import normalise_hl7
from gateway.settings import GatewaySettings
from model.inference.routing import DEFAULT_TABLE, RoutingTable, route_event
from schemas.events import ReportEvent

FIXTURES = Path(__file__).parents[1] / "fixtures" / "routes"
DEMO_TABLE = Path(__file__).parents[2] / "cli" / "demo_routes.toml"
CASES = sorted(p.stem for p in FIXTURES.glob("*.hl7"))
TABLES = {"shipped": DEFAULT_TABLE, "demo": DEMO_TABLE}


def event(name: str) -> ReportEvent:
    raw = (FIXTURES / f"{name}.hl7").read_bytes()
    return normalise_hl7(raw, settings=GatewaySettings(), received_at=datetime(2026, 11, 22, tzinfo=UTC))


@pytest.mark.parametrize("table", sorted(TABLES))
@pytest.mark.parametrize("name", CASES)
def test_each_sample_reaches_its_route(name: str, table: str) -> None:
    sample = event(name)
    assert sample.findings and sample.status.value == "preliminary"
    assert route_event(sample, RoutingTable.load(TABLES[table])).name == name


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_route_has_a_sample(table: str) -> None:
    loaded = RoutingTable.load(TABLES[table])
    names = {row.name for row in loaded.rows} | {loaded.default.name}
    assert names == set(CASES), f"routes without a sample: {sorted(names - set(CASES))}; samples without a route: " \
                                f"{sorted(set(CASES) - names)}"


def test_chinese_routes_sit_above_their_english_rows() -> None:
    """The first matching row wins: a Chinese chest CT must not fall into ct_chest (nor head CT into ct_head)."""
    zh = {name: event(name) for name in CASES if name.endswith("_zh")}
    assert {e.language for e in zh.values()} == {"zh"}
    english = event("ct_chest").model_copy(update={"language": "en"})
    assert route_event(english, RoutingTable.load()).name == "ct_chest"
    assert route_event(zh["ct_chest_zh"].model_copy(update={"language": "en"}), RoutingTable.load()).name == "ct_chest"
