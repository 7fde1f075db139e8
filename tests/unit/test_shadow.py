"""Shadow mode's parts on a real SQLite store: the routing table's ``mode`` and ``promotion`` (defaults, inheritance,
refusals), the evidence and its thresholds (each can keep a route in shadow), the audit of every change (the table,
the evidence, a person), a table that changes its mode, going live forward-only, and the ``routes`` command."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli.main import main as cli_main
from model.inference.promotion import Promotion, RouteMode
from model.inference.routing import RoutingTable
from ops.capture import capture_final
from ops.shadow import RouteModes, evidence
from ops.store import Store
from schemas import (
    BodySystem,
    ConsistencyCheck,
    ConsistencyFlag,
    DraftImpression,
    FlagKind,
    Modality,
    ReportEvent,
    ReportStatus,
    Source,
)

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
FINDINGS = "Small left pleural effusion. No pneumothorax."
DRAFT = "Small left pleural effusion."
TABLE = """
mode = "shadow"
promotion = { min_signed = 2, min_accepted_unchanged = 0.5, min_rouge_l = 0.5, min_fcr = 0.0, max_flag_rate = 0.5 }

[default]
name = "general"
mode = "live"

[[route]]
name = "ct_chest"
modality = ["CT"]
body_system = ["chest"]

[[route]]
name = "ct_chest"
modality = ["CT"]
body_system = ["chest"]
site = ["SITE_B"]
"""


def table(tmp_path: Path, text: str = TABLE) -> RoutingTable:
    path = tmp_path / f"routes{abs(hash(text))}.toml"
    path.write_text(text, encoding="utf-8")
    return RoutingTable.load(path)


def test_the_table_gives_each_route_its_start_mode_and_thresholds(tmp_path: Path) -> None:
    routing = table(tmp_path)
    chest, general = routing.promotion("ct_chest"), routing.promotion("general")
    assert chest.mode is RouteMode.SHADOW and (chest.min_signed, chest.max_flag_rate) == (2, 0.5)
    assert general.mode is RouteMode.LIVE and general.min_signed == 2  # thresholds inherited, mode its own
    assert RoutingTable.load().promotion("ct_chest") == Promotion()  # the shipped table: every route live
    assert routing.promotion("gone") == routing.promotion_default


@pytest.mark.parametrize(("row", "message"), [
    ('mode = "dark"', "mode must be one of shadow, live"),
    ("promotion = { min_signed = 0 }", "min_signed must be an integer >= 1"),
    ("promotion = { min_rouge_l = 1.5 }", "min_rouge_l must lie in [0, 1]"),
    ("promotion = { min_recall = 0.5 }", "promotion takes"),
])
def test_a_malformed_mode_or_promotion_is_refused_at_load(tmp_path: Path, row: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        table(tmp_path, f'[default]\nname = "general"\n{row}\n')


def test_rows_of_one_route_must_share_its_mode(tmp_path: Path) -> None:
    text = TABLE + 'mode = "live"\n'  # the second ct_chest row (SITE_B) live, the first in shadow
    with pytest.raises(ValueError, match="'ct_chest' has rows with different modes"):
        table(tmp_path, text)


def _event(n: int, status: ReportStatus = ReportStatus.PRELIMINARY, impression: str = "") -> ReportEvent:
    return ReportEvent(event_id=f"ev-{n}-{status.value}", source=Source.HL7V2, message_control_id=f"M{n}",
                       accession=f"ACC{n}", status=status, site="SITE_A", modality=Modality.CT,
                       body_system=BodySystem.CHEST, findings=FINDINGS, impression=impression, radiologist_id="RAD1",
                       received_at=T0 + timedelta(minutes=n))


def _shadow_study(store: Store, modes: RouteModes, n: int, final: str | None, *, flagged: bool = False) -> None:
    """A preliminary drafted on ct_chest, held back (its route in shadow), then signed ``final`` (None: unsigned)."""
    event = _event(n)
    flags = [ConsistencyFlag(kind=FlagKind.MEASUREMENT, draft="5 cm")] if flagged else []
    draft = DraftImpression(event_id=event.event_id, accession=event.accession, site=event.site, route="ct_chest",
                            text=DRAFT, adapter_name="ct_chest", model="ct_chest", event=event,
                            consistency=ConsistencyCheck(flags=flags))
    store.save_draft(draft)
    assert modes.hold_back(draft)
    if final is not None:
        store.save_edit(capture_final(_event(n, ReportStatus.FINAL, final), draft))


def test_evidence_takes_a_shadow_route_live_and_the_change_is_audited(tmp_path: Path, store: Store) -> None:
    modes = RouteModes(store, table(tmp_path))
    modes.sync()
    _shadow_study(store, modes, 1, DRAFT)
    assert modes.evaluate() == []  # one signed of two: it stays, its evidence kept for ``routes``
    kept = store.mode_row("ct_chest")
    assert kept is not None and kept.evidence["failing"] == ["signed 1 < 2"]
    _shadow_study(store, modes, 2, DRAFT)
    [change] = modes.evaluate()
    assert (change.route, change.from_mode, change.to_mode, change.actor) == ("ct_chest", "shadow", RouteMode.LIVE,
                                                                              "evidence")
    assert change.evidence["signed"] == 2 and change.evidence["rouge_l"] == 1.0 and change.evidence["flag_rate"] == 0.0
    audit = store.mode_changes("ct_chest")
    assert [(c.to_mode.value, c.actor) for c in audit] == [("live", "evidence"), ("shadow", "routing-table")]
    assert modes.evaluate() == []  # live now: nothing more to do


@pytest.mark.parametrize(("finals", "flagged", "failing"), [
    (["Moderate right pneumothorax.", "Moderate right pneumothorax."], False, "accepted_unchanged 0.000 < 0.5"),
    (["Small left pleural effusion, unchanged.", DRAFT], False, "rouge_l"),
    ([DRAFT, DRAFT], True, "flag_rate 1.000 > 0.5"),
])
def test_each_threshold_can_keep_a_route_in_shadow(tmp_path: Path, store: Store, finals: list[str], flagged: bool,
                                                   failing: str) -> None:
    text = TABLE.replace("min_rouge_l = 0.5", "min_rouge_l = 0.95") if failing == "rouge_l" else TABLE
    modes = RouteModes(store, table(tmp_path, text))
    modes.sync()
    for n, final in enumerate(finals, start=1):
        _shadow_study(store, modes, n, final, flagged=flagged)
    assert modes.evaluate() == [] and modes.mode("ct_chest") is RouteMode.SHADOW
    row = store.mode_row("ct_chest")
    assert row is not None and any(f.startswith(failing) for f in row.evidence["failing"]), row.evidence


def test_evidence_counts_from_the_latest_shadow_period_only(tmp_path: Path, store: Store) -> None:
    routing = table(tmp_path)
    modes = RouteModes(store, routing)
    _shadow_study(store, modes, 1, DRAFT)
    _shadow_study(store, modes, 2, DRAFT)
    assert modes.set_mode("ct_chest", RouteMode.LIVE, by="dr-a", reason="early sign-off")
    assert modes.set_mode("ct_chest", RouteMode.SHADOW, by="dr-a", reason="new adapter")
    row = store.mode_row("ct_chest")
    assert row is not None
    assert evidence(store, "ct_chest", row.since, routing.promotion("ct_chest")).signed == 0
    assert evidence(store, "ct_chest", None, routing.promotion("ct_chest")).signed == 2


def test_going_live_is_forward_only(tmp_path: Path, store: Store) -> None:
    modes = RouteModes(store, table(tmp_path))
    _shadow_study(store, modes, 1, None)
    modes.set_mode("ct_chest", RouteMode.LIVE, by="dr-a", reason="go")
    old = store.latest_draft("ACC1")
    assert old is not None and modes.hold_back(old)  # made in shadow: never posted
    new = old.model_copy(update={"event_id": "ev-new", "accession": "ACC-NEW"})
    assert not modes.hold_back(new) and not store.is_shadow_draft("ev-new")


def test_a_changed_table_mode_is_applied_once_and_audited(tmp_path: Path, store: Store) -> None:
    RouteModes(store, table(tmp_path)).sync()
    changed = RouteModes(store, table(tmp_path, TABLE.replace('mode = "shadow"', 'mode = "live"', 1)))
    [change] = [c for c in changed.sync() if c.route == "ct_chest"]
    assert (change.from_mode, change.to_mode, change.actor) == ("shadow", RouteMode.LIVE, "routing-table")
    assert changed.sync() == [] and changed.mode("ct_chest") is RouteMode.LIVE


def test_setting_an_unknown_route_is_refused(tmp_path: Path, store: Store) -> None:
    with pytest.raises(ValueError, match="unknown route 'nope'"):
        RouteModes(store, table(tmp_path)).set_mode("nope", RouteMode.LIVE, by="x", reason="y")


def test_the_routes_command(tmp_path: Path, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    routing_path = tmp_path / "routes.toml"
    routing_path.write_text(TABLE, encoding="utf-8")
    modes = RouteModes(store, RoutingTable.load(routing_path))
    for n in (1, 2):
        _shadow_study(store, modes, n, DRAFT)
    base = ["routes", "--database-url", store.url, "--routing-table", str(routing_path)]
    assert cli_main([*base, "--format", "json"]) == 0
    shown = {r["route"]: r for r in json.loads(capsys.readouterr().out)}
    assert shown["ct_chest"]["mode"] == "shadow" and shown["ct_chest"]["evidence"]["passes"] is True
    assert shown["general"]["mode"] == "live" and not shown["general"]["seen"]
    assert cli_main([*base, "--evaluate"]) == 0
    out = capsys.readouterr().out
    changes = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(c["route"], c["to"], c["actor"]) for c in changes if c["route"] == "ct_chest"] == [
        ("ct_chest", "live", "evidence")]
    assert re.search(r"^ct_chest +live .* passes$", out, re.MULTILINE), out
    assert cli_main(["routes", "set", "ct_chest", "--mode", "shadow", "--reason", "audit", "--by", "dr-b",
                     "--database-url", store.url, "--routing-table", str(routing_path)]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True
    assert cli_main(["routes", "history", "ct_chest", "--database-url", store.url]) == 0
    history = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(h["to"], h["actor"], h["reason"]) for h in history][:2] == [("shadow", "dr-b", "audit"),
                                                                         ("live", "evidence", history[1]["reason"])]
    assert cli_main(["routes", "set", "nope", "--mode", "live", "--reason", "x", "--database-url", store.url]) == 2
