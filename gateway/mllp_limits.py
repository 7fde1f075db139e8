"""Limits of the inbound MLLP listener: idle and handshake timeouts, connection caps, the bound on unread ACK bytes.

Input: ``GatewaySettings`` (``IG_MLLP_*``), each accepted connection's peer address. Output: ``MllpLimits`` for the
listener; ``Admission.admit`` says whether a connection may stay open, before any TLS handshake. Failure modes: none
(a refused connection is closed at accept by the listener and counted in ``ig_mllp_refused_total``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gateway.settings import GatewaySettings


@dataclass(frozen=True)
class MllpLimits:
    """``None`` is no limit: the listener built by ``serve`` always has all of them (``from_settings``)."""

    idle_timeout_s: float | None = None
    handshake_timeout_s: float | None = None
    max_connections: int | None = None
    max_connections_per_peer: int | None = None
    max_unacked_bytes: int | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> MllpLimits:
        return cls(idle_timeout_s=settings.mllp_idle_timeout_s,
                   handshake_timeout_s=settings.mllp_handshake_timeout_s,
                   max_connections=settings.mllp_max_connections,
                   max_connections_per_peer=settings.mllp_max_connections_per_peer,
                   max_unacked_bytes=settings.mllp_max_unacked_bytes)


class Admission:
    """Open connections, in all and per peer IP address; one listener's, on its one event loop."""

    def __init__(self, limits: MllpLimits):
        self._limits = limits
        self.open = 0
        self._per_peer: Counter[str] = Counter()

    def admit(self, peer: str) -> str:
        """"" when the connection is admitted (and counted until ``release``), else the refusal reason."""
        if self._limits.max_connections is not None and self.open >= self._limits.max_connections:
            return "max_connections"
        if self._limits.max_connections_per_peer is not None and self._per_peer[peer] >= self._limits.max_connections_per_peer:
            return "max_connections_per_peer"
        self.open += 1
        self._per_peer[peer] += 1
        return ""

    def release(self, peer: str) -> None:
        self.open -= 1
        self._per_peer[peer] -= 1
        if self._per_peer[peer] <= 0:
            del self._per_peer[peer]
