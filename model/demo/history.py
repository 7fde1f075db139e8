"""Synthetic monitoring history for the demo: weeks of signed reports per route, with a planted change at one site.

Stage: none (a data source for ``impression-gateway demo`` and its tests). Input: a ``HistoryPlan``. Output: ``Study``
tuples (findings from ``model.demo.synthetic``, the final as signed, the draft the serving adapter made then), in
signing order; the same plan gives the same studies. Files: ``model/demo/history_files.py``. Failure modes:
``KeyError`` for a route the synthetic corpus lacks. Invented data only.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from model.demo import synthetic

# The planted change (README "make demo"): from ``change_week`` on, the changed site's CT protocol reads coronary
# calcium on every chest CT, as the SCCT/STR guideline asks of non-gated chest CT: the findings of the changed route
# there report coronary artery calcification when present, and the radiologists list it in the impression. The serving
# adapter never saw it and leaves it out, so those drafts are edited: accepted-unchanged, ROUGE-L and ECR drop on the
# route from that week. The finding is in the findings, so a retrained adapter can learn to state it. The sites use
# the default prompt style (model/inference/site_styles.toml names neither), the prompt the demo adapters learnt on.
NEW_FINDING = "Coronary artery calcification is present."
NEW_ITEM = "Coronary artery calcification."
NEW_SHARE = 1.0  # studies of the changed site and route, from the change on, that report it
SITES = ("GENHOSP", "RIVERSIDE")
STYLES: tuple[synthetic.ListStyle, ...] = ("numbered", "dash", "plain")
EDIT_SHARE = 0.25  # drafts a radiologist edits anyway (one statement of a list left out by the draft)


@dataclass(frozen=True)
class HistoryPlan:
    routes: tuple[str, ...]
    end: datetime  # history ends before this instant: the Monday of the current week, say
    weeks: int = 12
    per_week: int = 16  # signed reports per route × site × week
    sites: tuple[str, ...] = SITES
    changed_route: str = "ct_chest"
    changed_site: str = "RIVERSIDE"
    change_week: int = 8  # 1-based: the first week signed in the new style
    seed: int = 7
    adapters: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # route → serving (adapter, version)

    def week_start(self, week: int) -> datetime:
        return self.end - timedelta(weeks=self.weeks - week + 1)


@dataclass(frozen=True)
class Study:
    n: int
    item: synthetic.CorpusItem
    site: str
    week: int
    received_at: datetime  # the preliminary (findings only) arrived
    signed_at: datetime
    final: str
    draft: str
    adapter: str
    adapter_version: str
    changed: bool  # reported under the new protocol

    @property
    def route(self) -> str:
        return self.item.route

    @property
    def accession(self) -> str:
        return f"HIS{self.n:07d}"

    @property
    def patient(self) -> str:
        return f"SYNH{self.n * 7919 % 100_003:06d}"

    @property
    def radiologist(self) -> str:
        return f"{self.site[-1]}{self.n % 4 + 1}"


def with_calcification(item: synthetic.CorpusItem) -> synthetic.CorpusItem:
    """The study as the new protocol reports it: the finding in the findings, its statement last in the impression."""
    items = (*(() if not item.abnormal else item.impression_items), NEW_ITEM)
    style = next(s for s in STYLES if item.impression_as(s) == item.impression)
    joiner = "" if item.language == "zh" else " "
    return replace(item, findings=item.findings + joiner + NEW_FINDING, impression_items=items, abnormal=True,
                   impression=synthetic.format_impression(items, style, item.language))


def _draft(item: synthetic.CorpusItem, rng: random.Random) -> str:
    """What the serving adapter drafted: the route's house style; now and then without the last statement."""
    if len(item.impression_items) > 1 and rng.random() < EDIT_SHARE:
        style = next(s for s in STYLES if item.impression_as(s) == item.impression)  # the route's house style
        return synthetic.format_impression(item.impression_items[:-1], style, item.language)
    return item.impression


def _moment(start: datetime, slot: int, rng: random.Random) -> datetime:
    """A weekday working hour of the week starting ``start`` (slot spreads the studies over the days)."""
    return start + timedelta(days=slot % 5, hours=8 + rng.randrange(9), minutes=rng.randrange(60))


def studies(plan: HistoryPlan) -> list[Study]:
    """Every study of the plan, in signing order."""
    out: list[Study] = []
    per_route = plan.weeks * len(plan.sites) * plan.per_week
    for route in plan.routes:
        items = iter(synthetic.generate(route, per_route, seed=plan.seed))  # the findings generator, as it is
        rng = random.Random(f"history:{plan.seed}:{route}")
        for week in range(1, plan.weeks + 1):
            for site in plan.sites:
                for slot in range(plan.per_week):
                    item = next(items)
                    received = _moment(plan.week_start(week), slot, rng)
                    signed = received + timedelta(minutes=20 + rng.randrange(120))
                    changed = ((route, site) == (plan.changed_route, plan.changed_site) and week >= plan.change_week
                               and rng.random() < NEW_SHARE)
                    signed_as = with_calcification(item) if changed else item
                    adapter, version = plan.adapters.get(route, ("base", ""))
                    out.append(Study(len(out), signed_as, site, week, received, signed, signed_as.impression,
                                     _draft(item, rng), adapter, version, changed))
    return sorted(out, key=lambda s: (s.signed_at, s.n))


def history_end(now: datetime) -> datetime:
    """Monday 00:00 UTC of ``now``'s ISO week: history fills the weeks before it, live traffic this one."""
    day = now.astimezone(UTC).date()
    return datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=day.weekday())
