"""The inference client: one ``InferenceRequest`` → one ``DraftImpression`` from an OpenAI-compatible server.

Stage: infer. Input: ``InferenceRequest`` (``route.adapter``: the served model name, or the registry's serving adapter).
Output: ``DraftImpression`` (drafter, adapter name/version from the supervisor's ``X-IG-Adapter*`` headers, prompt
version, latency). Failure modes: ``RetryLater`` (worker unavailable after retries, or a bad response); ``Reject``
(other 4xx, empty draft, unknown prompt). Logs carry ids, never prompt or draft. Details: model/README.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx
import structlog

from model.adapters import registry
from model.inference.prompts import render_messages
from model.settings import ModelSettings
from model.worker.keys import bearer, client_key
from model.worker.vllm import ADAPTER_HEADER, VERSION_HEADER
from schemas.errors import Reject, RetryLater
from schemas.events import Drafter, DraftImpression, InferenceRequest

log = structlog.get_logger(__name__)
RETRYABLE_STATUS = frozenset({408, 429})  # plus every 5xx


class InferenceClient:
    """``async with InferenceClient(url) as client: draft = await client.draft(request)``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_base_s: float = 0.5,
        max_tokens: int = 128,
        temperature: float = 0.0,
        adapter_versions: Mapping[str, str] | None = None,
        route_adapters: Mapping[str, str] | None = None,
        api_key: str = "",
    ):
        if not base_url:
            raise ValueError("no model server URL configured (IG_MODEL_URL)")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_base_s = backoff_base_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.adapter_versions = dict(adapter_versions or {})
        # route -> the registry's serving adapter: a promoted adapter (served under its own name) replaces
        # the routing table's adapter name, so drafts use and carry the new version after a worker restart.
        self.route_adapters = dict(route_adapters or {})
        # The worker front's key (model.worker.keys), on every request; never logged.
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, headers=bearer(api_key))
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
        if route_adapters is None:
            serving = registry.load_registry(settings.registry_path).serving() if has_registry else ()
            route_adapters = {entry.route: entry.name for entry in serving}
        return cls(
            settings.model_url,
            timeout_s=settings.timeout_s,
            retries=settings.retries,
            backoff_base_s=settings.backoff_base_s,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            adapter_versions=adapter_versions,
            route_adapters=route_adapters,
            api_key=client_key(settings),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> InferenceClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def served_models(self) -> list[str]:
        """The model names the server accepts (base and adapters); raises ``httpx.HTTPError``."""
        response = await self._http.get("/v1/models")
        response.raise_for_status()
        return [str(entry["id"]) for entry in response.json().get("data", [])]

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/v1/models")).status_code == 200
        except httpx.HTTPError:
            return False

    async def draft(self, request: InferenceRequest) -> DraftImpression:
        return (await self._drafts(request, {"temperature": self.temperature}))[0]

    async def samples(self, request: InferenceRequest, n: int, *, temperature: float) -> list[DraftImpression]:
        """``n`` drafts sampled at ``temperature`` in one completion (OpenAI ``n``), for the consistency check's
        regenerate policy. Seeded by the event id: a redelivered request samples the same drafts."""
        seed = int.from_bytes(hashlib.sha256(request.event.event_id.encode()).digest()[:4], "big") >> 1
        return await self._drafts(request, {"temperature": temperature, "n": n, "seed": seed})

    async def _drafts(self, request: InferenceRequest, sampling: dict[str, Any]) -> list[DraftImpression]:
        messages, prompt_version = render_messages(request)
        event, adapter = request.event, self.route_adapters.get(request.route.name, request.route.adapter)
        bound = log.bind(event_id=event.event_id, accession=event.accession, route=request.route.name, adapter=adapter)
        payload = {"model": adapter, "messages": messages, "max_tokens": self.max_tokens, **sampling}
        started = time.monotonic()
        body, latency_s, attempts, headers = await self._complete(payload, request, bound)
        version = self.adapter_versions.get(adapter, "")
        if served := headers.get(ADAPTER_HEADER):  # a worker supervisor answered: it names the adapter that drafted
            adapter, version = served, headers.get(VERSION_HEADER, "")
        try:
            choices = list(body["choices"])
            texts = [str(choice["message"].get("content") or "").strip() for choice in choices]
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
                   served_adapter=adapter, adapter_version=version)
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
                prompt_version=prompt_version,
                model=adapter,
                latency_ms=latency_s * 1000,
                event=event,
            )
            for text in texts if text
        ]

    def _backoff_s(self, retry: int) -> float:
        """Exponential backoff with jitter: retry n waits between half and all of base * 2**(n-1)."""
        ceiling = self.backoff_base_s * 2 ** (retry - 1)
        return self._jitter.uniform(ceiling / 2, ceiling)

    async def _complete(self, payload: dict[str, Any], request: InferenceRequest,
                        bound: Any) -> tuple[dict[str, Any], float, int, httpx.Headers]:
        """POST the completion with bounded retries; returns (body, latency of the answering call, attempts, headers)."""
        ids = {"message_control_id": request.event.message_control_id, "accession": request.event.accession}
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff_s(attempt))
            started = time.monotonic()
            try:
                response = await self._http.post("/v1/chat/completions", json=payload)
            except httpx.TransportError as exc:  # connect/read/write errors and timeouts
                failure = type(exc).__name__
            else:
                status = response.status_code
                if status < 400:
                    try:
                        return response.json(), time.monotonic() - started, attempt + 1, response.headers
                    except ValueError:
                        raise RetryLater("model_bad_response", f"status {status} with a body that is not JSON", **ids) from None
                if status == 401:  # our key, not this report (RFC 6750 §3.1): park it until the key is fixed
                    bound.warning("draft.unauthorized", status=status)
                    raise RetryLater("model_unauthorized", "model server answered status 401: set "
                                     "IG_MODEL_API_KEY_FILE to a key the worker accepts", **ids)
                if status not in RETRYABLE_STATUS and status < 500:
                    bound.warning("draft.rejected", status=status)
                    raise Reject("model_rejected", f"model server answered status {status}", **ids)
                failure = f"status {status}"
            bound.warning("draft.attempt_failed", attempt=attempt + 1, error=failure)
        raise RetryLater("model_unavailable", f"{failure} after {self.retries + 1} attempts", **ids)
