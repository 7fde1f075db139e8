"""The drafter port: ``draft(InferenceRequest) -> DraftImpression``, declared once, and a fake beside it.

Stage: infer. ``DrafterPort`` is all a caller that only drafts needs (the flow, ``model eval``);
``ClosableDrafter`` adds the readiness probe and shutdown the serving shell needs. Implementations:
``InferenceClient`` (LLM), ``RetrievalDrafter``, ``FallbackDrafter``; ``FakeDrafter`` for unit tests.
Failure modes: a drafter raises ``RetryLater`` (its engine is down) or ``Reject`` (the request is wrong).
"""

from __future__ import annotations

from typing import Protocol

from schemas.errors import RetryLater
from schemas.events import Drafter, DraftImpression, InferenceRequest


class DrafterPort(Protocol):
    async def draft(self, request: InferenceRequest) -> DraftImpression: ...


class ClosableDrafter(DrafterPort, Protocol):
    async def ready(self) -> bool: ...

    async def aclose(self) -> None: ...


class FakeDrafter:
    """The fake beside the port: answers ``text`` as ``drafter`` and keeps the requests it was given.

    Set ``unavailable`` to make it answer like a down worker (``RetryLater``; not ready).
    """

    def __init__(self, text: str = "1. Fake draft.", *, drafter: Drafter = Drafter.LLM):
        self.text = text
        self.drafter = drafter
        self.unavailable = False
        self.closed = False
        self.requests: list[InferenceRequest] = []

    async def draft(self, request: InferenceRequest) -> DraftImpression:
        self.requests.append(request)
        event = request.event
        if self.unavailable:
            raise RetryLater("model_unavailable", "fake drafter marked unavailable",
                             message_control_id=event.message_control_id, accession=event.accession)
        return DraftImpression(event_id=event.event_id, accession=event.accession, site=event.site,
                               route=request.route.name, text=self.text, drafter=self.drafter,
                               adapter_name=request.route.adapter, model=request.route.adapter, event=event)

    async def ready(self) -> bool:
        return not self.unavailable

    async def aclose(self) -> None:
        self.closed = True
