"""A route's configured mode and the evidence it needs to go live (the routing table's ``mode`` and ``promotion``).

Input: the ``mode = "shadow" | "live"`` and ``promotion = {min_signed, min_accepted_unchanged, min_rouge_l, min_fcr,
max_flag_rate}`` values of a routing-table row (or the table's defaults). Output: a frozen ``Promotion``. Failure
modes: a malformed value raises ``ValueError`` naming the row, at load time. The run-time mode lives in the store
(ops/shadow.py): the table says where a route starts and what its shadow evidence must pass. Details: README "Routing".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields, replace


class RouteMode(enum.StrEnum):
    """``shadow``: drafts are made, checked, stored and captured beside the finals, never posted; ``live``: posted."""

    SHADOW = "shadow"
    LIVE = "live"


_RATES = ("min_accepted_unchanged", "min_rouge_l", "min_fcr", "max_flag_rate")


@dataclass(frozen=True)
class Promotion:
    """Where a route starts, and the shadow evidence that takes it live: at least ``min_signed`` signed reports whose
    shadow draft was captured beside the final, with every mean on the right side of its threshold. The defaults are
    a cautious starting point, not a finding: set them from the site's own pilot."""

    mode: RouteMode = RouteMode.LIVE
    min_signed: int = 50
    min_accepted_unchanged: float = 0.3  # share of finals signed exactly as drafted
    min_rouge_l: float = 0.5  # mean ROUGE-L F1, draft vs final (ops/metrics)
    min_fcr: float = 0.8  # mean factual consistency rate of the draft against its findings
    max_flag_rate: float = 0.1  # share of drafts with at least one consistency flag (ops/consistency)

    @classmethod
    def parse(cls, mode: object, raw: object, where: str, default: Promotion | None = None) -> Promotion:
        """A row's ``mode`` and ``promotion`` values (None: not given); what they leave out comes from ``default``."""
        base = default or cls()
        if mode is not None:
            try:
                base = replace(base, mode=RouteMode(str(mode)))
            except ValueError:
                raise ValueError(f"routing table {where}: mode must be one of "
                                 f"{', '.join(m.value for m in RouteMode)}") from None
        if raw is None:
            return base
        known = {f.name for f in fields(cls)} - {"mode"}
        if not isinstance(raw, dict) or set(raw) - known:
            raise ValueError(f"routing table {where}: promotion takes {', '.join(sorted(known))}")
        signed = raw.get("min_signed", base.min_signed)
        if isinstance(signed, bool) or not isinstance(signed, int) or signed < 1:
            raise ValueError(f"routing table {where}: promotion min_signed must be an integer >= 1")
        rates = {name: raw.get(name, getattr(base, name)) for name in _RATES}
        for name, value in rates.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"routing table {where}: promotion {name} must lie in [0, 1]")
        return cls(base.mode, signed, *(float(rates[name]) for name in _RATES))

    def thresholds(self) -> dict[str, float]:
        return {"min_signed": self.min_signed, **{name: getattr(self, name) for name in _RATES}}
