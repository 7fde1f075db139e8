"""The fallback drafter: the LLM worker first, the CPU retrieval drafter when the worker is down.

Stage: infer.
Input: ``InferenceRequest``. Output: ``DraftImpression`` whose ``drafter`` field says which engine
wrote it (``llm`` from the primary, ``retrieval`` from the fallback).
Failure modes:
- ``RetryLater`` from the primary (worker down or answering garbage after its own retries) → the
  fallback drafts instead. With a fallback configured a down worker no longer parks requests on
  ``drafts.parked``; the park path stays for deployments without a fallback, and for a fallback
  that itself raises ``RetryLater``.
- ``Reject`` from the primary (unknown adapter, prompt too long, empty draft) is passed on: the
  request is wrong, not the worker, and the dead-letter queue is where a person sees it.

After a ``RetryLater`` the primary is skipped for ``cooldown_s`` seconds, so a hung worker does not
cost every request the client's full timeout × retries before it falls back. Logs carry ids only.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import structlog

from schemas.errors import RetryLater
from schemas.events import DraftImpression, InferenceRequest

log = structlog.get_logger(__name__)


class ClosableDrafter(Protocol):
    async def draft(self, request: InferenceRequest) -> DraftImpression: ...

    async def ready(self) -> bool: ...

    async def aclose(self) -> None: ...


class FallbackDrafter:
    """``FallbackDrafter(InferenceClient.from_settings(s), RetrievalDrafter())``: same ``draft`` protocol."""

    def __init__(self, primary: ClosableDrafter, fallback: ClosableDrafter, *, cooldown_s: float = 30.0):
        self.primary = primary
        self.fallback = fallback
        self.cooldown_s = cooldown_s
        self._primary_down_until = 0.0  # time.monotonic() before which the primary is not tried

    async def draft(self, request: InferenceRequest) -> DraftImpression:
        event = request.event
        if time.monotonic() >= self._primary_down_until:
            try:
                return await self.primary.draft(request)
            except RetryLater as exc:
                self._primary_down_until = time.monotonic() + self.cooldown_s
                log.warning("draft.fallback", event_id=event.event_id, accession=event.accession,
                            route=request.route.name, code=exc.code, cooldown_s=self.cooldown_s)
        return await self.fallback.draft(request)

    async def ready(self) -> bool:
        """True when either drafter can draft."""
        primary, fallback = await asyncio.gather(self.primary.ready(), self.fallback.ready())
        return primary or fallback

    async def aclose(self) -> None:
        await asyncio.gather(self.primary.aclose(), self.fallback.aclose())
