"""The post stage on real parts for the delivery tests: ``Flow`` on a SQLite store, posting to a real MLLP draft inbox
and the loopback FHIR server, topics recorded (not Kafka), short timeouts and backoff from settings.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from consumers.flow import Flow
from consumers.settings import ConsumerSettings
from gateway.hl7 import normalise_hl7
from gateway.post import DraftPoster
from gateway.settings import GatewaySettings
from model.inference.port import DrafterPort, FakeDrafter
from model.inference.routing import RoutingTable
from ops.store import Store
from schemas import DeadLetter, Drafter, DraftImpression, PostResult, ReportEvent, ReportStatus, topics

FIXTURES = Path(__file__).parents[1] / "fixtures" / "hl7"
DRAFT_TEXT = "1. No acute cardiopulmonary abnormality."
FAST = {"delivery_backoff_s": 0.05, "delivery_backoff_max_s": 0.3, "park_backoff_s": 0.01, "park_backoff_max_s": 0.05}


def log_to_current_stdout() -> None:
    """Loggers made from here on print to this session's stdout: a test that ran ``cli.main`` under ``capsys`` left
    structlog printing to that test's stream, closed since (cli/main.py configures the logs with ``sys.stdout``)."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stdout))


class Recorded:
    """A topic that keeps what was sent to it (values, and each record's headers beside it)."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.headers: list[dict[str, bytes]] = []

    async def send(self, *, key: bytes, value: bytes, headers: dict[str, bytes] | None = None) -> asyncio.Future[None]:
        """As faust's ``Topic.send``: the delivery to await (here taken at once)."""
        self.values.append(value)
        self.headers.append(dict(headers or {}))
        taken = asyncio.get_running_loop().create_future()
        taken.set_result(None)
        return taken


def make_flow(tmp_path: Path, *, mllp_port: int | None = None, fhir_url: str = "", drafter: DrafterPort | None = None,
              store: Store | None = None, gateway: dict[str, Any] | None = None, **consumer: Any) -> Flow:
    given = {"draft_mllp_timeout_s": 1.0, "fhir_server_timeout_s": 1.0} | (gateway or {})
    settings = GatewaySettings(draft_mllp_target=f"127.0.0.1:{mllp_port}" if mllp_port else "", fhir_server_url=fhir_url,
                               **given)
    made = Flow(consumer_settings=ConsumerSettings(**(FAST | consumer)), gateway_settings=settings,
                store=store or Store(f"sqlite:///{tmp_path / 'store.db'}").create(), routing=RoutingTable.load(),
                drafter=drafter or FakeDrafter(DRAFT_TEXT), poster=DraftPoster(settings, backoff_s=0.01))
    declared: defaultdict[str, Recorded] = defaultdict(Recorded)
    made.bind(declared)
    return made


async def close_flow(flow: Flow) -> None:
    await flow.stop_delivery()
    await flow.poster.close()


def sent(flow: Flow, topic: str) -> list[bytes]:
    return flow._topics[topic].values  # type: ignore[no-any-return]


def posted(flow: Flow) -> list[PostResult]:
    return [PostResult.model_validate_json(v) for v in sent(flow, topics.DRAFTS_POSTED.name)]


def dead_letters(flow: Flow) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(v) for name, t in flow._topics.items() if name.endswith(".dlq")
            for v in t.values]


_BASE = normalise_hl7((FIXTURES / "separate_obx_loinc.hl7").read_bytes(), settings=GatewaySettings())


def study(n: int, **update: Any) -> ReportEvent:
    """Preliminary report ``n`` of its own accession and order (synthetic)."""
    return _BASE.model_copy(update={"event_id": f"ev-{n}", "message_control_id": f"MSG{n}", "accession": f"ACC{n:03d}",
                                    "placer_order_number": f"PL{n}", "filler_order_number": f"FI{n}", **update})


def final_of(event: ReportEvent) -> ReportEvent:
    """The signed final of ``event``'s study (its own event id and MSH-10)."""
    return event.model_copy(update={"event_id": f"{event.event_id}-F", "message_control_id": f"{event.message_control_id}F",
                                    "status": ReportStatus.FINAL})


def draft_of(event: ReportEvent, *, text: str = DRAFT_TEXT, adapter_version: str = "1",
             drafter: Drafter = Drafter.LLM) -> DraftImpression:
    name = "retrieval" if drafter is Drafter.RETRIEVAL else "xr_chest"
    return DraftImpression(event_id=event.event_id, accession=event.accession, site=event.site, route="xr_chest",
                           text=text, drafter=drafter, adapter_name=name, adapter_version=adapter_version, model=name,
                           event=event)


def value(draft: DraftImpression) -> bytes:
    return draft.model_dump_json().encode()


async def until(check: Callable[[], Any], what: str, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
