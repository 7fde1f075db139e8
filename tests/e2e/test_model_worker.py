"""The LLM worker for real: the demo model served by vLLM (CPU) with per-route LoRA adapters, driven
through ``model.inference.client.InferenceClient``. No mock of the model anywhere; the server is started once
per session by ``tests/harness/vllm_server.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from model.demo import synthetic
from model.demo.build import DemoModel, build_demo_model
from model.inference.client import InferenceClient
from model.inference.prompts import render_messages
from model.worker.vllm import VllmLaunch, VllmServer, find_free_port, vllm_lora_rank
from schemas import Drafter, InferenceRequest, Reject, RetryLater
from schemas.language import has_ideograph

pytestmark = pytest.mark.slow


def abnormal_item(route: str) -> synthetic.CorpusItem:
    """A held-out report with findings (seed 7 is used by no training set)."""
    return next(item for item in synthetic.generate(route, 50, seed=7) if item.abnormal)


def request_for(item: synthetic.CorpusItem, adapter: str, index: int = 0) -> InferenceRequest:
    return synthetic.as_request(item, index, adapter=adapter)


def client_for(server: VllmServer, demo: DemoModel) -> InferenceClient:
    return InferenceClient(server.url, timeout_s=60, retries=1, backoff_base_s=0.1, adapter_versions=demo.adapter_versions())


def test_demo_model_is_built_once_and_cached(demo_model: DemoModel) -> None:
    started = time.monotonic()
    again = build_demo_model(demo_model.root.parent, progress=False)
    assert again == demo_model and time.monotonic() - started < 5
    assert {"ct_chest", "xr_chest", "ct_head_zh"} <= set(demo_model.adapters)
    manifest = json.loads(demo_model.manifest_path.read_text(encoding="utf-8"))
    for name, entry in manifest["adapters"].items():
        config = json.loads((demo_model.adapters[name] / "adapter_config.json").read_text(encoding="utf-8"))
        assert config["r"] == entry["rank"] and not config["modules_to_save"]  # each recipe's own rank
        assert set(config["target_modules"]) <= {"q_proj", "k_proj", "v_proj", "o_proj"}  # xr_chest: q, v
        assert entry["eval_loss_adapter"] < entry["eval_loss_base"]  # the adapter fits its route's style better
    assert demo_model.identity_adapter is not None
    identity = load_file(demo_model.identity_adapter / "adapter_model.safetensors")
    assert identity and all(not t.any() for name, t in identity.items() if "lora_B" in name)  # an exactly-zero delta
    config = json.loads((demo_model.base_dir / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["hidden_size"] // config["num_attention_heads"] == 64
    assert "chat_template" in json.loads((demo_model.base_dir / "tokenizer_config.json").read_text(encoding="utf-8"))


def test_launch_argv_names_base_adapters_and_rank(demo_model: DemoModel) -> None:
    launch = VllmLaunch(base_dir=demo_model.base_dir, port=8123, adapters=demo_model.adapters)
    argv = launch.argv("/py")
    assert argv[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--max-lora-rank") + 1] == "64" and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert f"ct_chest={demo_model.adapters['ct_chest']}" in argv and "--enable-lora" in argv
    assert argv[argv.index("--served-model-name") + 1] == "base" and argv[argv.index("--max-loras") + 1] == "8"
    with_identity = VllmLaunch(base_dir=demo_model.base_dir, port=8123, adapters=demo_model.adapters,
                               identity_adapter=demo_model.identity_adapter).argv("/py")
    assert with_identity[with_identity.index("--served-model-name") + 1] == "base-weights"
    assert f"base={demo_model.identity_adapter}" in with_identity and with_identity[with_identity.index("--max-loras") + 1] == "8"
    assert launch.env()["HF_HUB_OFFLINE"] == "1" and launch.env()["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert [vllm_lora_rank(r) for r in (1, 8, 9, 16, 33, 256)] == [8, 8, 16, 16, 64, 256]


async def test_server_answers_with_base_and_every_adapter(vllm_server: VllmServer, demo_model: DemoModel) -> None:
    async with client_for(vllm_server, demo_model) as client:
        assert await client.ready()
        assert set(await client.served_models()) == {"base", "base-weights", *demo_model.adapters}


async def test_each_request_selects_its_adapter(vllm_server: VllmServer, demo_model: DemoModel) -> None:
    item = abnormal_item("ct_chest")
    names = ["base", "ct_chest", "xr_chest"]
    async with client_for(vllm_server, demo_model) as client:
        # Concurrent, so one engine batch mixes the base model and two adapters.
        drafts = await asyncio.gather(*(client.draft(request_for(item, name, i)) for i, name in enumerate(names)))
    texts = {d.adapter_name: d.text for d in drafts}
    assert len(set(texts.values())) == 3, texts
    # each adapter drafts unlike the base (the recipes' data mix house styles: no one style per route to test for)
    assert texts["ct_chest"] != texts["base"] != texts["xr_chest"], texts
    for draft in drafts:
        assert draft.drafter is Drafter.LLM and draft.prompt_version.startswith("impression_v1@") and draft.latency_ms > 0
        assert draft.model == draft.adapter_name and draft.accession.startswith("SYN-ct_chest-")
        assert draft.adapter_version == demo_model.adapter_versions().get(draft.adapter_name, "")
        assert draft.finish_reason in ("stop", "length")  # vLLM's, recorded (a "length" draft is degenerate)
    assert drafts[1].adapter_version.startswith("demo-")


async def test_base_requests_stay_base_in_mixed_batches(vllm_server: VllmServer, demo_model: DemoModel) -> None:
    """vLLM-cpu applies the last adapter to no-LoRA requests batched with LoRA ones; serving "base"
    through the zero adapter must give exactly the base weights' output, alone or in a mixed batch."""
    item = abnormal_item("ct_chest")
    async with client_for(vllm_server, demo_model) as client:
        weights = (await client.draft(request_for(item, "base-weights"))).text
        alone = (await client.draft(request_for(item, "base"))).text
        adapter_alone = (await client.draft(request_for(item, "xr_chest"))).text
        for order in (("xr_chest", "base"), ("base", "xr_chest")):
            mixed = await asyncio.gather(*(client.draft(request_for(item, name, i)) for i, name in enumerate(order)))
            texts = {d.adapter_name: d.text for d in mixed}
            assert texts == {"base": alone, "xr_chest": adapter_alone}, (order, texts)
    assert alone == weights and alone != adapter_alone


async def test_chinese_findings_get_a_chinese_prompt_and_draft(vllm_server: VllmServer, demo_model: DemoModel) -> None:
    request = request_for(abnormal_item("ct_head_zh"), "ct_head_zh")
    messages, _ = render_messages(request)
    assert "诊断意见" in messages[-1]["content"] and has_ideograph(messages[0]["content"])
    async with client_for(vllm_server, demo_model) as client:
        draft = await client.draft(request)
    assert has_ideograph(draft.text) and draft.text.startswith("1. "), draft.text


async def test_closed_port_raises_retry_later_quickly() -> None:
    request = request_for(abnormal_item("xr_chest"), "xr_chest")
    started = time.monotonic()
    async with InferenceClient(f"http://127.0.0.1:{find_free_port()}", timeout_s=2, retries=2, backoff_base_s=0.05) as client:
        assert not await client.ready()
        with pytest.raises(RetryLater) as caught:
            await client.draft(request)
    assert caught.value.code == "model_unavailable" and caught.value.accession == request.event.accession
    assert "ConnectError after 3 attempts" in caught.value.reason
    assert time.monotonic() - started < 3


async def test_unknown_adapter_is_rejected_with_the_status_only(vllm_server: VllmServer, demo_model: DemoModel) -> None:
    request = request_for(abnormal_item("ct_chest"), "no_such_adapter")
    async with client_for(vllm_server, demo_model) as client:
        with pytest.raises(Reject) as caught:
            await client.draft(request)
    assert caught.value.code == "model_rejected" and caught.value.reason == "model server answered status 404"


def test_server_start_failure_quotes_the_log(tmp_path: Path) -> None:
    launch = VllmLaunch(base_dir=tmp_path / "missing", port=find_free_port())
    server = VllmServer(launch, log_path=tmp_path / "vllm.log", startup_timeout_s=120)
    with pytest.raises(RuntimeError, match="vLLM exited"):
        server.start()
    assert server.process is None
