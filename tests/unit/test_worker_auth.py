"""The model worker front's API keys (RFC 6750 bearer): 401 without or with a wrong key, through with the key,
rotation by rewriting the key file, health and metrics open (and free of report text), fail closed off loopback.

vLLM is faked here (an ``httpx.MockTransport`` behind a real ``Supervisor``): these test the front and the
clients' headers. A real vLLM behind a keyed front: tests/e2e/test_model_train_serve.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from starlette.testclient import TestClient

from cli.main import build_parser
from model.adapters.registry import Registry, RegistryEntry
from model.adapters.runtime import load_adapter
from model.demo import synthetic
from model.inference.client import InferenceClient
from model.settings import ModelSettings
from model.worker.front import front_app
from model.worker.keys import KeyConfigError, WorkerKeys, client_key, front_keys, is_loopback, read_keys
from model.worker.poll import wait_served
from model.worker.run import WorkerOptions
from model.worker.supervisor import Backend, Generation, Supervisor
from model.worker.vllm import find_free_port
from schemas.errors import RetryLater
from tests.conftest import REPO

OLD, NEW, WRONG = "old-key-" + "a" * 24, "new-key-" + "b" * 24, "wrong-key-" + "c" * 22
FINDINGS, IMPRESSION = "FINDINGS-SENTINEL nodule 7 mm", "IMPRESSION-SENTINEL no acute finding"
KEY_ENV = ("IG_WORKER_API_KEY_FILE", "IG_WORKER_API_KEY", "IG_MODEL_API_KEY_FILE", "IG_MODEL_API_KEY",
           "IG_WORKER_HOST")


def _entry(name: str, route: str) -> RegistryEntry:
    return RegistryEntry(name, route, f"v-{name}", Path(f"/adapters/{name}"), Path("/base"), "0" * 64, "x",
                         "serving", "2025-01-01")


class _Body(httpx.AsyncByteStream):
    """A body that streams (``httpx.Response(json=…)`` is read at once, and the front forwards a stream)."""

    def __init__(self, value: Any) -> None:
        self.data = json.dumps(value).encode()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


class FakeVllm:
    """The upstream the front forwards to: records what reached it, answers like vLLM's OpenAI server."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        body: Any = "Success"  # load/unload_lora_adapter
        if request.url.path == "/v1/models":
            body = {"data": [{"id": "base"}, {"id": "ct_chest-v2"}]}
        elif request.url.path == "/v1/chat/completions":
            body = {"choices": [{"message": {"content": IMPRESSION}, "finish_reason": "stop"}],
                    "usage": {"completion_tokens": 5}}
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=_Body(body))


def _supervisor(tmp_path: Path, upstream: FakeVllm) -> Supervisor:
    supervisor = Supervisor(WorkerOptions(registry_path=tmp_path / "registry.json", log_dir=tmp_path))
    registry = Registry(tmp_path / "registry.json", base_path=Path("/base")).with_entry(_entry("ct_chest-v2", "ct_chest"))
    server: Any = SimpleNamespace(url="http://127.0.0.1:9", process=SimpleNamespace(poll=lambda: None, pid=1),
                                  launch=None, stop=lambda: None)
    supervisor.live = Generation(1, Backend(server, served={"base", "ct_chest-v2"}), registry)
    supervisor.http = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    return supervisor


def _key_file(path: Path, *keys: str) -> Path:
    path.write_text("# worker API keys, one a line\n\n" + "".join(f"{k}\n" for k in keys), encoding="utf-8")
    return path


def _chat(client: TestClient, key: str | None = None, scheme: str = "Bearer") -> httpx.Response:
    headers = {"Authorization": f"{scheme} {key}"} if key else {}
    return client.post("/v1/chat/completions", headers=headers,
                       json={"model": "ct_chest", "messages": [{"role": "user", "content": FINDINGS}]})


def test_keys_are_read_from_the_file_and_the_environment(tmp_path: Path) -> None:
    names = ("IG_WORKER_API_KEY_FILE", "IG_WORKER_API_KEY")
    assert read_keys(_key_file(tmp_path / "keys", NEW, OLD), SecretStr(WRONG), names) == [NEW, OLD, WRONG]
    assert read_keys(None, SecretStr(""), names) == []
    with pytest.raises(KeyConfigError, match="IG_WORKER_API_KEY_FILE .* cannot be read"):
        read_keys(tmp_path / "missing", SecretStr(""), names)
    with pytest.raises(KeyConfigError, match="holds no key"):  # set but empty: an error, not "open"
        read_keys(_key_file(tmp_path / "empty"), SecretStr(""), names)
    for bad in ("short-key", "has a space in it, 24+ chars", "x" * 20 + "\u00e9"):
        with pytest.raises(KeyConfigError) as caught:
            read_keys(_key_file(tmp_path / "bad", NEW, bad), SecretStr(""), names)
        assert "line 4" in str(caught.value) and bad not in str(caught.value)  # where, never the key
    settings = ModelSettings(api_key_file=_key_file(tmp_path / "client", NEW, OLD), api_key=SecretStr(WRONG))
    assert client_key(settings) == NEW and client_key(ModelSettings(api_key=SecretStr(OLD))) == OLD
    assert client_key(ModelSettings()) == "" and OLD not in repr(ModelSettings(api_key=SecretStr(OLD)))


def test_the_front_refuses_without_or_with_a_wrong_key(tmp_path: Path) -> None:
    upstream = FakeVllm()
    keys = WorkerKeys(_key_file(tmp_path / "keys", OLD))
    with TestClient(front_app(_supervisor(tmp_path, upstream), keys)) as client:
        missing = _chat(client)
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == 'Bearer realm="model-worker"'
        assert missing.json() == {"error": {"message": "an API key is required: Authorization: Bearer <key>",
                                            "type": "invalid_request_error", "code": "missing_api_key"}}
        wrong = _chat(client, WRONG)
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="model-worker", error="invalid_token"'
        assert WRONG not in wrong.text and WRONG not in str(wrong.headers)  # a key is never echoed
        assert _chat(client, OLD, scheme="Basic").status_code == 401  # only the bearer scheme
        assert _chat(client, OLD[:-1]).status_code == 401 and _chat(client, OLD + "x").status_code == 401
        for method, path in (("GET", "/ig/worker"), ("POST", "/ig/reload"), ("GET", "/v1/models"),
                             ("POST", "/v1/load_lora_adapter"), ("POST", "/v1/unload_lora_adapter")):
            assert client.request(method, path).status_code == 401, path
        assert upstream.seen == []  # nothing reached vLLM
        metrics = client.get("/metrics").text
        assert 'ig_worker_auth_refused_total{reason="missing"}' in metrics
        assert 'ig_worker_auth_refused_total{reason="invalid_token"}' in metrics


def test_with_the_key_requests_pass_and_the_key_stops_at_the_front(tmp_path: Path) -> None:
    upstream = FakeVllm()
    keys = WorkerKeys(_key_file(tmp_path / "keys", OLD))
    with TestClient(front_app(_supervisor(tmp_path, upstream), keys)) as client:
        answer = _chat(client, OLD)
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == IMPRESSION
        assert answer.headers["X-IG-Adapter"] == "ct_chest-v2"
        assert _chat(client, OLD, scheme="bearer").status_code == 200  # RFC 9110 §11.1: case-insensitive scheme
        bearer = {"Authorization": f"Bearer {OLD}"}
        assert client.get("/ig/worker", headers=bearer).json()["generation"] == 1
        assert client.post("/ig/reload", headers=bearer).status_code == 202
        assert client.post("/v1/load_lora_adapter", headers=bearer, json={"lora_name": "c", "lora_path": "/c"}).status_code == 200
    assert len(upstream.seen) == 3 and all("authorization" not in r.headers for r in upstream.seen)


def test_keys_rotate_by_rewriting_the_file(tmp_path: Path) -> None:
    path = _key_file(tmp_path / "keys", OLD)
    keys = WorkerKeys(path, SecretStr(WRONG), recheck_s=0)  # the env key stays valid throughout
    with TestClient(front_app(_supervisor(tmp_path, FakeVllm()), keys)) as client:
        assert _chat(client, OLD).status_code == 200 and _chat(client, NEW).status_code == 401
        _key_file(path, NEW, OLD)  # rotation: both accepted while the clients move
        assert _chat(client, NEW).status_code == 200 and _chat(client, OLD).status_code == 200
        _key_file(path, NEW)  # the old key removed
        assert _chat(client, OLD).status_code == 401 and _chat(client, NEW).status_code == 200
        path.write_text("", encoding="utf-8")  # a file turned unusable drops its keys: fail closed
        assert _chat(client, NEW).status_code == 401 and _chat(client, WRONG).status_code == 200
        path.unlink()
        assert _chat(client, NEW).status_code == 401
        _key_file(path, NEW)
        assert _chat(client, NEW).status_code == 200


def test_health_and_metrics_stay_open_and_carry_no_report_text(tmp_path: Path) -> None:
    keys = WorkerKeys(_key_file(tmp_path / "keys", OLD))
    with TestClient(front_app(_supervisor(tmp_path, FakeVllm()), keys)) as client:
        assert _chat(client, OLD).status_code == 200  # findings in, an impression out: neither may show below
        _chat(client, WRONG)
        for path in ("/health/live", "/health/ready", "/metrics"):
            response = client.get(path)
            assert response.status_code == 200, path
            for secret in ("SENTINEL", OLD, WRONG):
                assert secret not in response.text, (path, secret)


def test_without_keys_the_front_is_open(tmp_path: Path) -> None:
    with TestClient(front_app(_supervisor(tmp_path, FakeVllm()), WorkerKeys())) as client:
        assert _chat(client).status_code == 200 and client.get("/ig/worker").status_code == 200


def test_a_non_loopback_front_needs_a_key(tmp_path: Path) -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "vllm", ""))
    assert not front_keys("127.0.0.1", None, SecretStr("")).configured  # loopback without a key: open
    with pytest.raises(KeyConfigError) as caught:
        front_keys("0.0.0.0", None, SecretStr(""))
    assert "IG_WORKER_HOST" in str(caught.value) and "IG_WORKER_API_KEY_FILE" in str(caught.value)
    assert front_keys("0.0.0.0", None, SecretStr(OLD)).configured
    assert front_keys("0.0.0.0", _key_file(tmp_path / "keys", OLD), SecretStr("")).configured


def _model_serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in KEY_ENV}
    return subprocess.run([sys.executable, "-m", "cli", "model", "serve", "--registry", str(tmp_path / "registry.json"),
                           "--data-dir", str(tmp_path), *args], cwd=REPO, env=clean | (env or {}),
                          capture_output=True, text=True, timeout=120)


def test_model_serve_refuses_a_non_loopback_front_without_a_key_before_starting_vllm(tmp_path: Path) -> None:
    done = _model_serve(tmp_path, "--host", "0.0.0.0")
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    refusal = json.loads(line)
    assert refusal["error"] == "refused" and "0.0.0.0" in refusal["reason"]
    assert "IG_WORKER_HOST" in refusal["reason"] and "IG_WORKER_API_KEY_FILE" in refusal["reason"]
    assert done.stdout == "" and not (tmp_path / "logs").exists()  # no vLLM was started, no log opened
    done = _model_serve(tmp_path, "--host", "0.0.0.0", "--api-key-file", str(tmp_path / "missing"))
    assert done.returncode == 2 and "IG_WORKER_API_KEY_FILE" in done.stderr and "cannot be read" in done.stderr
    done = _model_serve(tmp_path, env={"IG_WORKER_HOST": "0.0.0.0", "IG_WORKER_API_KEY": "short"})
    assert done.returncode == 2 and "IG_WORKER_API_KEY:" in done.stderr and "short" not in done.stderr


def test_clients_refuse_an_unusable_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for name in KEY_ENV:
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["retrain", "--route", "ct_chest", "--model-api-key-file", str(tmp_path / "none")])
    assert args.handler(args) == 2  # the handler, not main(): main configures the logs
    assert "IG_MODEL_API_KEY_FILE" in capsys.readouterr().err
    clean = {k: v for k, v in os.environ.items() if k not in KEY_ENV}
    done = subprocess.run([sys.executable, "-m", "cli", "serve", "--role", "consumers", "--kafka-bootstrap",
                           "127.0.0.1:9", "--model-url", "http://127.0.0.1:9", "--model-api-key-file",
                           str(tmp_path / "none")], cwd=REPO, env=clean, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "IG_MODEL_API_KEY_FILE" in done.stderr, done.stderr[-2000:]


@contextmanager
def _serving(app: Any) -> Iterator[str]:
    """The front on a free loopback port (uvicorn in a thread), so the real clients talk HTTP to it."""
    port = find_free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_the_clients_send_the_key(tmp_path: Path) -> None:
    keys = WorkerKeys(_key_file(tmp_path / "keys", OLD))
    client_file = _key_file(tmp_path / "client-key", OLD)
    item = next(iter(synthetic.generate("ct_chest", 5, seed=1)))
    request = synthetic.as_request(item, 0, adapter="ct_chest")

    async def draft(settings: ModelSettings) -> Any:
        async with InferenceClient.from_settings(settings, adapter_versions={}, route_adapters={}) as client:
            return await client.draft(request), await client.ready()

    with _serving(front_app(_supervisor(tmp_path, FakeVllm()), keys)) as url:
        drafted, ready = asyncio.run(draft(ModelSettings(model_url=url, api_key_file=client_file)))
        assert drafted.text == IMPRESSION and drafted.adapter_name == "ct_chest-v2" and ready
        with pytest.raises(RetryLater) as caught:  # our key, not the report: parked, not dead-lettered
            asyncio.run(draft(ModelSettings(model_url=url, retries=0)))
        assert caught.value.code == "model_unauthorized"
        assert load_adapter(url, "candidate", tmp_path, api_key=OLD)
        with pytest.raises(httpx.HTTPStatusError, match="401"):
            load_adapter(url, "candidate", tmp_path, api_key=WRONG)
        served = wait_served(url, "ct_chest", "ct_chest-v2", api_key=OLD, timeout_s=5)
        assert served["generation"] == 1 and "error" not in served
        refused = wait_served(url, "ct_chest", "ct_chest-v2", timeout_s=300)  # 401: at once, not after 300 s
        assert "401" in refused["error"] and "IG_MODEL_API_KEY_FILE" in refused["error"]
