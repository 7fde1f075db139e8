"""Fixtures shared by the stream tests: a stand-in RIS (MLLP inbox) and an in-memory FHIR server, always stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.draft_inbox import DraftInbox
from tests.harness.delivery import log_to_current_stdout
from tests.harness.fhir_server import FhirServer


@pytest.fixture(autouse=True)
def _logs() -> None:
    log_to_current_stdout()


@pytest.fixture
async def inbox() -> AsyncIterator[DraftInbox]:
    running = await DraftInbox().start()
    yield running
    await running.stop()


@pytest.fixture
def fhir() -> Iterator[FhirServer]:
    with FhirServer() as server:
        yield server
