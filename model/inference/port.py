"""The drafter port: ``draft(InferenceRequest) -> DraftImpression``, declared once, and a fake beside it.

Stage: infer. ``DrafterPort`` is all a caller that only drafts needs (the flow, ``model eval``); ``ClosableDrafter``
adds the readiness probe and shutdown the serving shell needs; ``Sampler``, sampled drafts (consistency regenerate).
Implementations: ``InferenceClient`` (LLM), ``RetrievalDrafter``, ``FallbackDrafter``; ``FakeDrafter`` for unit tests.
Failure modes: a drafter raises ``RetryLater`` (its engine is down) or ``Reject`` (the request is wrong).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from schemas.errors import RetryLater
from schemas.events import Drafter, DraftImpression, InferenceRequest


class DrafterPort(Protocol):
    async def draft(self, request: InferenceRequest) -> DraftImpression: ...


@runtime_checkable
class Sampler(Protocol):
    """``n`` more drafts of one request, sampled at ``temperature`` (not greedy): the consistency check's regenerate
    policy keeps the most consistent of the first draft and these. ``RetryLater`` when the engine is down."""

    async def samples(self, request: InferenceRequest, n: int, *, temperature: float) -> list[DraftImpression]: ...


class ClosableDrafter(DrafterPort, Protocol):
    async def ready(self) -> bool: ...

    async def aclose(self) -> None: ...


class FakeDrafter:
    """The fake beside the port: answers ``text`` as ``drafter`` and keeps the requests it was given.

    Set ``unavailable`` to make it answer like a down worker (``RetryLater``; not ready). ``samples`` answers the
    ``sampled`` texts in turn (a ``Sampler``), recording each call's ``(n, temperature)`` in ``sampled_with``.
    """

    def __init__(self, text: str = "1. Fake draft.", *, drafter: Drafter = Drafter.LLM, sampled: Sequence[str] = ()):
        self.text = text
        self.drafter = drafter
        self.sampled = list(sampled)
        self.sampled_with: list[tuple[int, float]] = []
        self.unavailable = False
        self.closed = False
        self.requests: list[InferenceRequest] = []

    async def draft(self, request: InferenceRequest) -> DraftImpression:
        self.requests.append(request)
        return self._made(request, self.text)

    async def samples(self, request: InferenceRequest, n: int, *, temperature: float) -> list[DraftImpression]:
        self.sampled_with.append((n, temperature))
        texts = [self.sampled[i % len(self.sampled)] for i in range(n)] if self.sampled else [self.text] * n
        return [self._made(request, text) for text in texts]

    def _made(self, request: InferenceRequest, text: str) -> DraftImpression:
        event = request.event
        if self.unavailable:
            raise RetryLater("model_unavailable", "fake drafter marked unavailable",
                             message_control_id=event.message_control_id, accession=event.accession)
        return DraftImpression(event_id=event.event_id, accession=event.accession, site=event.site,
                               route=request.route.name, text=text, drafter=self.drafter,
                               adapter_name=request.route.adapter, model=request.route.adapter, event=event)

    async def ready(self) -> bool:
        return not self.unavailable

    async def aclose(self) -> None:
        self.closed = True
