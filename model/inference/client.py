"""The inference client: one ``InferenceRequest`` → one ``DraftImpression`` from the route's OpenAI-compatible worker.

Stage: infer. Input: ``InferenceRequest`` (``route.adapter``, or the registry's serving adapter); the ``Placement``
(which worker drafts which route). Output: ``DraftImpression`` (adapter name/version from the worker's headers, prompt
version, latency). Failure modes: ``RetryLater`` (the route's workers unavailable after retries, or a bad response);
``Reject`` (other 4xx, empty draft, unknown prompt). Logs carry ids and the worker, never text. See model/README.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import structlog
from prometheus_client import Counter

from model.adapters import registry
from model.inference.adapter_choice import bind_prompt, choose_adapter
from model.inference.heading import without_heading
from model.inference.placement import Placement
from model.inference.prompt_bindings import PromptBindings
from model.inference.prompts import render_messages
from model.settings import ModelSettings, WorkerDown
from model.worker.keys import bearer, client_key
from model.worker.vllm import ADAPTER_HEADER, VERSION_HEADER
from schemas.errors import Reject, RetryLater
from schemas.events import Drafter, DraftImpression, InferenceRequest

log = structlog.get_logger(__name__)
RETRYABLE_STATUS = frozenset({408, 429})  # plus every 5xx
WORKER_REQUESTS = Counter("ig_inference_requests_total", "Completions asked of each model worker by outcome (ok, "
                          "unavailable, not_held, rejected)", ["worker", "outcome"])


class InferenceClient:
    """``async with InferenceClient(url) as client: draft = await client.draft(request)``; with ``placement``
    (``IG_MODEL_WORKERS``) each route's requests go to its worker, and ``worker_down`` says what they do while
    it is down: ``park`` (``RetryLater`` once the workers that hold the route fail) or ``failover`` (every worker
    in the route's order; those in cooldown after a failure last)."""

    def __init__(
        self,
        base_url: str = "",
        *,
        placement: Placement | None = None,
        worker_down: WorkerDown = "park",
        cooldown_s: float = 30.0,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_base_s: float = 0.5,
        max_tokens: int = 128,
        temperature: float = 0.0,
        adapter_versions: Mapping[str, str] | None = None,
        route_adapters: Mapping[str, str] | None = None,
        adapter_prompts: Mapping[str, str] | None = None,
        registry_path: Path | None = None,
        api_key: str = "",
    ):
        if placement is None and not base_url:
            raise ValueError("no model server URL configured (IG_MODEL_URL or IG_MODEL_WORKERS)")
        self.placement = placement or Placement.single(base_url)
        self.worker_down = worker_down
        self.cooldown_s = cooldown_s
        self._resting_until: dict[str, float] = {}  # worker → time.monotonic() until which it is tried last
        self.retries = retries
        self.backoff_base_s = backoff_base_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.adapter_versions = dict(adapter_versions or {})
        # route -> the registry's serving adapter: a promoted adapter (served under its own name) replaces
        # the routing table's adapter name, so drafts use and carry the new version after a worker restart.
        self.route_adapters = dict(route_adapters or {})
        self._adapter_keys = {name: key for key, name in self.route_adapters.items()}  # serving adapter → route key
        # adapter -> the prompt template it was trained with (registry ``prompt``, retrain's prompt selection): its
        # drafts are prompted with that template, not the routing table's.
        # Re-read from the registry (``registry_path``) when it changes: a promotion while running (prompt_bindings.py).
        self.prompt_bindings = PromptBindings(registry_path, self.route_adapters, adapter_prompts)
        # The worker front's key (model.worker.keys), on every request; never logged.
        self._http = httpx.AsyncClient(timeout=timeout_s, headers=bearer(api_key))
        self._jitter = random.Random()  # not for security: spreads retries of many workers apart

    @classmethod
    def from_settings(cls, settings: ModelSettings, *, adapter_versions: Mapping[str, str] | None = None,
                      route_adapters: Mapping[str, str] | None = None) -> InferenceClient:
        """A client per the settings, read once at start: adapter versions and each route's serving adapter
        from the adapter registry (else versions from the demo manifest, no route overrides) unless given; the API
        key from ``IG_MODEL_API_KEY_FILE`` / ``IG_MODEL_API_KEY`` (``KeyConfigError`` when unusable)."""
        has_registry = settings.registry_path.is_file()
        if adapter_versions is None:
            adapter_versions = registry.adapter_versions(settings.registry_path if has_registry else settings.manifest_path)
        loaded = registry.load_registry(settings.registry_path) if has_registry else None
        if route_adapters is None:
            serving = loaded.serving() if loaded is not None else ()
            route_adapters = {entry.route: entry.name for entry in serving}
        return cls(
            placement=Placement.from_settings(settings),
            worker_down=settings.worker_down,
            cooldown_s=settings.worker_cooldown_s,
            timeout_s=settings.timeout_s,
            retries=settings.retries,
            backoff_base_s=settings.backoff_base_s,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            adapter_versions=adapter_versions,
            route_adapters=route_adapters,
            adapter_prompts=loaded.bound_prompts() if loaded is not None else {},
            registry_path=settings.registry_path,
            api_key=client_key(settings),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> InferenceClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def served_models(self) -> list[str]:
        """The model names the workers accept (base and adapters), all workers together; raises ``httpx.HTTPError``."""
        names: dict[str, None] = {}
        for url in self.placement.workers.values():
            response = await self._http.get(f"{url}/v1/models")
            response.raise_for_status()
            names |= dict.fromkeys(str(entry["id"]) for entry in response.json().get("data", []))
        return list(names)

    async def _up(self, url: str) -> bool:
        try:
            return (await self._http.get(f"{url}/v1/models")).status_code == 200
        except httpx.HTTPError:
            return False

    async def ready(self) -> bool:
        """Every worker answers (one down is degraded: its routes park or fail over)."""
        return all(await asyncio.gather(*(self._up(url) for url in self.placement.workers.values())))

    def placement_key(self, request: InferenceRequest, adapter: str | None = None) -> str:
        """What the placement places ``request`` by: the registry's route key of the adapter it drafts with
        (``<route>@<site>`` for a site adapter: on the worker that loads it), else the route (the base: anywhere)."""
        if adapter is None:
            adapter = choose_adapter(request.route, request.event.site, self.route_adapters).adapter
        return self._adapter_keys.get(adapter, request.route.name)

    def worker_of(self, request: InferenceRequest) -> str:
        """The worker that drafts ``request`` while it is up: the first of its placement key's order."""
        return self.placement.order(self.placement_key(request))[0]

    async def draft(self, request: InferenceRequest) -> DraftImpression:
        return (await self._drafts(request, {"temperature": self.temperature}))[0]

    async def samples(self, request: InferenceRequest, n: int, *, temperature: float) -> list[DraftImpression]:
        """``n`` drafts sampled at ``temperature`` in one completion (OpenAI ``n``), for the consistency check's
        regenerate policy. Seeded by the event id: a redelivered request samples the same drafts."""
        seed = int.from_bytes(hashlib.sha256(request.event.event_id.encode()).digest()[:4], "big") >> 1
        return await self._drafts(request, {"temperature": temperature, "n": n, "seed": seed})

    async def _drafts(self, request: InferenceRequest, sampling: dict[str, Any]) -> list[DraftImpression]:
        event, choice = request.event, choose_adapter(request.route, request.event.site, self.route_adapters)
        adapter = choice.adapter  # the fallback chain site → route → base (model/inference/adapter_choice.py)
        # Prompted as the chosen adapter was trained (its registry ``prompt``), else as the routing table says.
        messages, prompt_version = render_messages(bind_prompt(request, adapter, self.prompt_bindings.current()))
        bound = log.bind(event_id=event.event_id, accession=event.accession, route=request.route.name, adapter=adapter,
                         adapter_source=choice.source, adapter_reason=choice.reason)
        payload = {"model": adapter, "messages": messages, "max_tokens": self.max_tokens, **sampling}
        started = time.monotonic()
        key = self.placement_key(request, adapter)
        body, latency_s, attempts, headers, worker = await self._complete(payload, request, key, bound)
        version = self.adapter_versions.get(adapter, "")
        if served := headers.get(ADAPTER_HEADER):  # a worker supervisor answered: it names the adapter that drafted
            adapter, version = served, headers.get(VERSION_HEADER, "")
        try:
            choices = list(body["choices"])
            texts = [without_heading(str(choice["message"].get("content") or "").strip()) for choice in choices]
            finished = [str(choice.get("finish_reason") or "") for choice in choices]
        except (KeyError, TypeError, AttributeError):
            choices = []
        if not choices:
            raise RetryLater("model_bad_response", "the completion has no choices[0].message",
                             message_control_id=event.message_control_id, accession=event.accession)
        if not any(texts):  # greedy decoding would only repeat it; dead-letter so a person or a fallback drafter sees it
            bound.warning("draft.empty", finish_reason=choices[0].get("finish_reason"))
            raise Reject("model_empty_draft", "the model returned an empty draft",
                         message_control_id=event.message_control_id, accession=event.accession)
        bound.info("draft.generated", latency_ms=round(latency_s * 1000, 1), total_ms=round((time.monotonic() - started) * 1000, 1),
                   attempts=attempts, finish_reason=choices[0].get("finish_reason"), choices=len(choices),
                   completion_tokens=(body.get("usage") or {}).get("completion_tokens"), prompt_version=prompt_version,
                   served_adapter=adapter, adapter_version=version, worker=worker,
                   placed=worker in self.placement.holders(key))
        return [
            DraftImpression(
                event_id=event.event_id,
                accession=event.accession,
                site=event.site,
                route=request.route.name,
                text=text,
                drafter=Drafter.LLM,
                adapter_name=adapter,
                adapter_version=version,
                adapter_source=choice.source,
                prompt_version=prompt_version,
                model=adapter,
                latency_ms=latency_s * 1000,
                finish_reason=reason,  # "length": cut at max_tokens, never posted as drafted (ops/consistency)
                event=event,
            )
            for text, reason in zip(texts, finished, strict=True) if text
        ]

    def _backoff_s(self, retry: int) -> float:
        """Exponential backoff with jitter: retry n waits between half and all of base * 2**(n-1)."""
        ceiling = self.backoff_base_s * 2 ** (retry - 1)
        return self._jitter.uniform(ceiling / 2, ceiling)

    def _candidates(self, key: str) -> list[str]:
        """park: the workers that hold the key's adapter; failover: every worker. Those resting after a failure last."""
        workers = self.placement.order(key) if self.worker_down == "failover" else self.placement.holders(key)
        now = time.monotonic()
        return sorted(workers, key=lambda worker: self._resting_until.get(worker, 0.0) > now)  # stable

    async def _complete(self, payload: dict[str, Any], request: InferenceRequest, key: str,
                        bound: Any) -> tuple[dict[str, Any], float, int, httpx.Headers, str]:
        """POST the completion to the route's workers in turn; (body, latency, attempts, headers, the worker)."""
        ids = {"message_control_id": request.event.message_control_id, "accession": request.event.accession}
        holders = self.placement.holders(key)
        failed: RetryLater | None = None
        for worker in self._candidates(key):
            try:
                body, latency_s, attempts, headers = await self._ask(worker, payload, ids, bound, held=worker in holders)
            except RetryLater as exc:
                if exc.code == "model_unauthorized":
                    raise
                failed = exc
                if exc.code == "model_unavailable":
                    self._resting_until[worker] = time.monotonic() + self.cooldown_s
                continue
            return body, latency_s, attempts, headers, worker
        assert failed is not None  # a placement has at least one worker
        raise failed

    async def _ask(self, worker: str, payload: dict[str, Any], ids: dict[str, str], bound: Any,
                   *, held: bool) -> tuple[dict[str, Any], float, int, httpx.Headers]:
        """One worker, bounded retries with backoff. ``held``: the placement loads the route here, so a 404 means
        the request is wrong (``Reject``); elsewhere it means this worker cannot take the adapter on (next worker)."""
        url, failure = f"{self.placement.url(worker)}/v1/chat/completions", ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff_s(attempt))
            started = time.monotonic()
            try:
                response = await self._http.post(url, json=payload)
            except httpx.TransportError as exc:  # connect/read/write errors and timeouts
                failure = type(exc).__name__
            else:
                status = response.status_code
                if status < 400:
                    WORKER_REQUESTS.labels(worker, "ok").inc()
                    try:
                        return response.json(), time.monotonic() - started, attempt + 1, response.headers
                    except ValueError:
                        raise RetryLater("model_bad_response", f"status {status} with a body that is not JSON", **ids) from None
                if status == 401:  # our key, not this report (RFC 6750 §3.1): park it until the key is fixed
                    bound.warning("draft.unauthorized", status=status, worker=worker)
                    raise RetryLater("model_unauthorized", "model server answered status 401: set "
                                     "IG_MODEL_API_KEY_FILE to a key the worker accepts", **ids)
                if status == 404 and not held:
                    WORKER_REQUESTS.labels(worker, "not_held").inc()
                    bound.warning("draft.not_held", worker=worker)
                    raise RetryLater("model_not_held", f"worker {worker} neither holds nor could load the adapter", **ids)
                if status not in RETRYABLE_STATUS and status < 500:
                    WORKER_REQUESTS.labels(worker, "rejected").inc()
                    bound.warning("draft.rejected", status=status, worker=worker)
                    raise Reject("model_rejected", f"model server answered status {status}", **ids)
                failure = f"status {status}"
            bound.warning("draft.attempt_failed", attempt=attempt + 1, error=failure, worker=worker)
        WORKER_REQUESTS.labels(worker, "unavailable").inc()
        raise RetryLater("model_unavailable", f"worker {worker}: {failure} after {self.retries + 1} attempts", **ids)
