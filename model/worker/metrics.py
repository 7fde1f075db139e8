"""The model worker's Prometheus metrics, served by the front's ``GET /metrics`` (``model.worker.front``).

Stage: serve. Input: swaps (``model.worker.supervisor``), forwarded and refused requests (``model.worker.front``),
adapters taken on for failover (``model.worker.placed``).
Output: ``ig_worker_*`` series in the default registry. Failure modes: none (counters only).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SWAPS = Counter("ig_worker_swaps_total", "Generation changes of the model worker by mode and outcome", ["mode", "outcome"])
GENERATION = Gauge("ig_worker_generation", "Number of the live vLLM generation (0: none live)")
IN_FLIGHT = Gauge("ig_worker_in_flight", "Requests forwarded to vLLM and not yet answered")
FORWARDED = Counter("ig_worker_requests_total", "Requests through the worker front by status class", ["status"])
AUTH_REFUSED = Counter("ig_worker_auth_refused_total", "Requests the worker front refused for want of a valid API key",
                       ["reason"])
ADAPTER_REQUESTS = Counter("ig_worker_adapter_requests_total", "Completions vLLM answered 2xx through the front, by "
                           "the adapter that drafted", ["adapter"])
TAKEN_ON = Counter("ig_worker_adapters_taken_on_total", "Adapters of routes placed on another worker loaded at runtime "
                   "for a failing-over client, by outcome", ["outcome"])
