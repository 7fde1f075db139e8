"""The fallback drafter: the LLM worker first, the CPU retrieval drafter when the worker is down (stage: infer).

Input: ``InferenceRequest``. Output: ``DraftImpression`` whose ``drafter`` says which engine wrote it.
Failure modes: ``RetryLater`` from the primary → the fallback drafts (and the primary rests ``cooldown_s``);
``Reject`` from the primary is passed on (the request is wrong, not the worker: the DLQ is where a person sees it);
no draft from the fallback either (e.g. nothing similar indexed) → ``RetryLater``: the request is parked, never posted.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from model.inference.port import ClosableDrafter, Sampler
from schemas.errors import RetryLater
from schemas.events import DraftImpression, InferenceRequest

log = structlog.get_logger(__name__)


# With a fallback configured a down worker parks only the requests the fallback cannot draft either (the retrieval
# drafter finds nothing similar): they wait on ``drafts.parked`` for the model, no placeholder is posted. The
# cooldown after a ``RetryLater`` means a hung worker does not cost every request the client's full timeout ×
# retries before it falls back. Logs carry ids only.
class FallbackDrafter:
    """``FallbackDrafter(InferenceClient.from_settings(s), RetrievalDrafter())``: same ``draft`` protocol."""

    def __init__(self, primary: ClosableDrafter, fallback: ClosableDrafter, *, cooldown_s: float = 30.0):
        self.primary = primary
        self.fallback = fallback
        self.cooldown_s = cooldown_s
        # time.monotonic() before which the primary is not tried, per worker (InferenceClient.worker_of): a worker
        # that is down must not send the routes of the workers that are up to the fallback.
        self._primary_down_until: dict[str, float] = {}

    def _worker(self, request: InferenceRequest) -> str:
        worker_of = getattr(self.primary, "worker_of", None)
        return str(worker_of(request)) if callable(worker_of) else ""

    async def draft(self, request: InferenceRequest) -> DraftImpression:
        event = request.event
        worker = self._worker(request)
        if time.monotonic() >= self._primary_down_until.get(worker, 0.0):
            try:
                return await self.primary.draft(request)
            except RetryLater as exc:
                self._primary_down_until[worker] = time.monotonic() + self.cooldown_s
                log.warning("draft.fallback", event_id=event.event_id, accession=event.accession,
                            route=request.route.name, code=exc.code, cooldown_s=self.cooldown_s)
        try:
            return await self.fallback.draft(request)
        except RetryLater as exc:  # no drafter can draft it now: the caller parks it until the model is back
            log.info("draft.none", event_id=event.event_id, accession=event.accession, route=request.route.name,
                     code=exc.code)
            raise

    async def samples(self, request: InferenceRequest, n: int, *, temperature: float) -> list[DraftImpression]:
        """The primary's samples (consistency regenerate); ``RetryLater`` while it rests or when it cannot sample."""
        if not isinstance(self.primary, Sampler) or time.monotonic() < self._primary_down_until.get(self._worker(request), 0.0):
            raise RetryLater("model_unavailable", "the primary drafter cannot sample now",
                             message_control_id=request.event.message_control_id, accession=request.event.accession)
        return await self.primary.samples(request, n, temperature=temperature)

    async def ready(self) -> bool:
        """True when either drafter can draft."""
        primary, fallback = await asyncio.gather(self.primary.ready(), self.fallback.ready())
        return primary or fallback

    async def aclose(self) -> None:
        await asyncio.gather(self.primary.aclose(), self.fallback.aclose())
