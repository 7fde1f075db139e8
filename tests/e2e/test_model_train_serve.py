"""``model train`` → adapter, training card and a candidate in the registry; ``model serve`` → vLLM with
every serving adapter (the new one included), after refusing incompatible adapters up front.

Real parts only: the commands run as subprocesses (``python -m cli``), training uses peft on
the demo base, and ONE worker (``model serve --swap runtime``: the supervisor and its vLLM CPU server) runs
for the whole module, behind an API key (README "Model worker authentication"): promotions and rollbacks reach
it at runtime, a change it cannot serve leaves it as it is, a killed vLLM is restarted. The rolling swap (the
default) is exercised by the retrain loop test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from model.adapters.check import adapter_problems
from model.adapters.promotion import promote, rollback
from model.adapters.registry import load_registry, save_registry, seed_from_manifest
from model.demo import synthetic
from model.demo.build import DemoModel
from model.inference.client import InferenceClient
from model.inference.prompts import render_messages
from schemas.errors import RetryLater
from schemas.events import DraftImpression
from tests.conftest import REPO
from tests.harness.worker_proc import Worker, running_worker

pytestmark = pytest.mark.slow
ROUTE = "ct_chest"
API_KEY = "e2e-worker-key-" + "k" * 24  # the module's worker front requires it


def cli(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "model", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def write_export(path: Path, route: str, n: int, seed: int = 3) -> Path:
    """A chat-format export as ops/export writes it: system + user as served, assistant = the impression."""
    with path.open("w", encoding="utf-8") as fh:
        for i, item in enumerate(synthetic.generate(route, n, seed=seed)):
            messages, _ = render_messages(synthetic.as_request(item, i, adapter=route))
            fh.write(json.dumps({"messages": [*messages, {"role": "assistant", "content": item.impression}]},
                                ensure_ascii=False) + "\n")
    return path


@dataclass(frozen=True)
class Trained:
    registry_path: Path
    output: dict[str, object]
    adapter_dir: Path
    wall_s: float


@pytest.fixture(scope="module")
def trained(demo_model: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("train")
    registry_path = root / "adapters" / "registry.json"
    seed_from_manifest(demo_model.manifest_path, registry_path)
    export = write_export(root / "export.jsonl", ROUTE, 120)
    started = time.monotonic()
    done = cli("train", "--export", export, "--route", ROUTE, "--registry", registry_path, "--data-dir", root,
               "--r", "8", "--alpha", "16", "--dropout", "0", "--lr", "5e-3", "--max-steps", "30",
               "--batch-size", "8", "--seed", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    output = json.loads(done.stdout.strip().splitlines()[-1])
    return Trained(registry_path, output, Path(str(output["path"])), time.monotonic() - started)


def test_train_writes_adapter_card_and_candidate(trained: Trained, demo_model: DemoModel) -> None:
    out = trained.output
    assert out["status"] == "candidate" and out["route"] == ROUTE and str(out["name"]).startswith(f"{ROUTE}-")
    config = json.loads((trained.adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["r"] == 8 and not config["modules_to_save"] and (trained.adapter_dir / "adapter_model.safetensors").is_file()
    card = json.loads((trained.adapter_dir / "training_card.json").read_text(encoding="utf-8"))
    assert card["export"]["train_records"] == 108 and card["export"]["eval_records"] == 12  # 10 % held out
    assert len(card["export"]["sha256"]) == 64 and card["hyperparameters"]["steps"] == 30
    assert card["hyperparameters"]["device"] == "cpu" and card["wall_s"] > 0
    assert card["evaluation"]["eval_loss_after"] < card["evaluation"]["eval_loss_before"], card["evaluation"]
    assert "held-out loss before" in (trained.adapter_dir / "TRAINING_CARD.md").read_text(encoding="utf-8")
    registry = load_registry(trained.registry_path)
    entry = registry.get(str(out["name"]))
    assert entry is not None and entry.status == "candidate" and entry.path == trained.adapter_dir
    assert entry.scores["eval_loss_after"] == card["evaluation"]["eval_loss_after"]
    assert entry.base_config_sha256 == registry.base_config_sha256 and entry.export_id == card["export"]["id"]
    serving = registry.serving_adapter(ROUTE)
    assert serving is not None and serving.name == ROUTE and serving.version.startswith("demo-")  # not promoted
    assert registry.serving_adapter("us_abdomen") is None  # a route without an adapter drafts with the base


def test_adapters_list_prints_the_registry(trained: Trained) -> None:
    done = cli("adapters", "list", "--registry", trained.registry_path, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split()[:4] == ["NAME", "ROUTE", "VERSION", "STATUS"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows[str(trained.output["name"])][3] == "candidate" and rows["xr_chest"][3] == "serving"


def broken_adapter(demo_model: DemoModel, root: Path, name: str, **changes: object) -> Path:
    target = root / name
    shutil.copytree(demo_model.adapters["xr_chest"], target)
    config_path = target / "adapter_config.json"
    config = {**json.loads(config_path.read_text(encoding="utf-8")), **changes}
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return target


def test_serve_refuses_incompatible_adapters_before_starting(demo_model: DemoModel, tmp_path: Path) -> None:
    registry_path = tmp_path / "registry.json"
    registry = seed_from_manifest(demo_model.manifest_path, registry_path)
    demo_entry = registry.get("xr_chest")
    assert demo_entry is not None
    bad = {"saves_head": broken_adapter(demo_model, tmp_path, "saves_head", modules_to_save=["lm_head"]),
           "embeds": broken_adapter(demo_model, tmp_path, "embeds", target_modules=["q_proj", "embed_tokens"])}
    for name, path in bad.items():
        registry = registry.with_entry(replace(demo_entry, name=name, route=f"route_{name}", path=path))
    save_registry(registry)
    started = time.monotonic()
    done = cli("serve", "--registry", registry_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "'saves_head'" in done.stderr and "modules_to_save" in done.stderr
    assert "'embeds'" in done.stderr and "embed_tokens not supported by vLLM for Qwen2ForCausalLM" in done.stderr
    assert "'xr_chest'" not in done.stderr and time.monotonic() - started < 60  # refused up front, no server
    limited = cli("serve", "--registry", registry_path, "--max-lora-rank", "4", timeout=120)
    assert limited.returncode == 2 and "'xr_chest': rank 8 exceeds the limit 4" in limited.stderr


def test_adapter_on_another_base_is_refused(demo_model: DemoModel) -> None:
    adapter = demo_model.adapters["ct_chest"]
    assert adapter_problems(adapter, demo_model.base_dir) == []
    problems = adapter_problems(adapter, demo_model.base_dir, recorded_base_sha256="0" * 64)
    assert len(problems) == 1 and "trained on a different base model" in problems[0]


@pytest.fixture(scope="module")
def served(trained: Trained) -> Iterator[Worker]:
    """``model serve --swap runtime`` on the registry with the trained adapter promoted (ONE vLLM for the module),
    its front behind an API key."""
    promote(trained.registry_path, str(trained.output["name"]))
    with running_worker(trained.registry_path, trained.registry_path.parents[1], "--swap", "runtime",
                        api_key=API_KEY) as worker:
        yield worker
    assert worker.exit_code == 0  # SIGTERM: the command stops its vLLM process groups, then exits 0


async def _draft(url: str, adapter: str, api_key: str = API_KEY) -> DraftImpression:
    item = next(item for item in synthetic.generate(ROUTE, 50, seed=7) if item.abnormal)
    async with InferenceClient(url, timeout_s=60, retries=3, backoff_base_s=2.0,
                               api_key=api_key) as client:  # no registry: the worker says
        return await client.draft(synthetic.as_request(item, 0, adapter=adapter))


async def test_serve_loads_every_serving_adapter_and_the_new_one_answers(served: Worker, trained: Trained,
                                                                         demo_model: DemoModel) -> None:
    name = str(trained.output["name"])
    assert served.ready["auth"] == "api-key"
    assert httpx.get(f"{served.url}/v1/models", timeout=10).status_code == 401  # no key: refused at the front
    with pytest.raises(RetryLater) as caught:  # a client without the key: parked, not dead-lettered
        await _draft(served.url, name, api_key="")
    assert caught.value.code == "model_unauthorized"
    assert httpx.get(f"{served.url}/health/ready", timeout=10).status_code == 200  # health stays open
    models = {m["id"] for m in httpx.get(f"{served.url}/v1/models", headers=served.headers, timeout=10).json()["data"]}
    # every demo adapter but the retired ct_chest, and the new one
    assert models == {"base", "base-weights", name, *(set(demo_model.adapters) - {ROUTE})}, models
    draft = await _draft(served.url, name)
    assert draft.text.strip() and draft.adapter_name == name and draft.adapter_version == trained.output["version"]
    routed = await _draft(served.url, ROUTE)  # the routing table's (now retired) name: the route's serving adapter answers
    assert routed.adapter_name == name and routed.adapter_version == trained.output["version"]
    assert served.status()["routes"][ROUTE] == {"adapter": name, "version": trained.output["version"]}
    print(f"train {trained.wall_s:.1f} s (subprocess), serve startup {served.ready['startup_s']:.1f} s")


async def test_a_rollback_reaches_the_running_worker_without_a_restart(served: Worker, trained: Trained) -> None:
    before = served.status()
    done = cli("adapters", "rollback", "--route", ROUTE, "--registry", trained.registry_path, timeout=60)
    assert done.returncode == 0, done.stderr
    swapped = served.next_event("swapped", timeout_s=60)
    assert swapped["mode"] == "runtime" and swapped["routes"][ROUTE]["adapter"] == ROUTE, swapped
    deadline = time.monotonic() + 30  # the retired adapter is unloaded once its in-flight requests are done
    while str(trained.output["name"]) in (after := served.status())["served"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert after["backend"] == before["backend"] and after["generation"] == before["generation"] + 1  # same vLLM
    assert ROUTE in after["served"] and str(trained.output["name"]) not in after["served"], after
    draft = await _draft(served.url, str(trained.output["name"]))  # a client that still asks for the retired one
    demo_version = load_registry(trained.registry_path).get(ROUTE).version  # type: ignore[union-attr]
    assert draft.adapter_name == ROUTE and draft.adapter_version == demo_version and draft.text.strip()


def test_a_change_the_worker_cannot_serve_leaves_the_live_generation(served: Worker, trained: Trained,
                                                                     demo_model: DemoModel) -> None:
    before = served.status()
    bad = broken_adapter(demo_model, trained.registry_path.parent, "xr_saves_head", modules_to_save=["lm_head"])
    registry = load_registry(trained.registry_path)
    demo_entry = registry.get("xr_chest")
    assert demo_entry is not None
    save_registry(registry.with_entry(replace(demo_entry, name="xr_saves_head", path=bad, status="candidate")))
    promote(trained.registry_path, "xr_saves_head")
    deadline = time.monotonic() + 60
    while not (status := served.status())["last_error"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status["last_error"] and "modules_to_save" in status["last_error"]["reason"], status
    assert status["generation"] == before["generation"] and status["routes"]["xr_chest"]["adapter"] == "xr_chest"
    assert httpx.get(f"{served.url}/health/ready", timeout=10).status_code == 200
    rollback(trained.registry_path, "xr_chest")  # back to what serves: the error clears on the next look
    deadline = time.monotonic() + 30
    while served.status()["last_error"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert served.status()["last_error"] is None


def test_a_dead_vllm_is_restarted_and_the_front_says_503_meanwhile(served: Worker) -> None:
    before = served.status()
    os.killpg(int(before["backend_pid"]), signal.SIGKILL)
    deadline, unavailable = time.monotonic() + 240, 0
    while time.monotonic() < deadline:
        response = httpx.get(f"{served.url}/v1/models", headers=served.headers, timeout=10)
        if response.status_code == 503:
            unavailable += 1
            assert response.headers["Retry-After"] == "5" and response.json()["error"]["code"] == 503
        elif response.status_code == 200 and served.status()["generation"] != before["generation"]:
            break
        time.sleep(0.5)
    after = served.status()
    assert after["ready"] and after["generation"] > before["generation"] and after["restarts"] == 1, after
    assert unavailable > 0 and after["backend_pid"] != before["backend_pid"]
