"""Seeded synthetic EditRecord streams for the drift tests (known quality levels and inputs)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from schemas import EditRecord

VOCABULARY = tuple(
    "lung lobe upper lower middle right left pleural effusion nodule mass opacity consolidation "
    "atelectasis pneumothorax heart size normal mediastinum hilar lymph node liver kidney spleen "
    "cyst lesion enhancement contrast small large mild moderate severe stable unchanged new prior "
    "study seen noted without evidence of acute chronic fracture bone cortex soft tissue vessel aorta "
    "wall thickening fluid free air bowel loop gallbladder stone duct dilatation pancreas adrenal".split()
)
NEW_WORDS = tuple(f"novelterm{i}" for i in range(60))
START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)  # a Monday


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def synthetic_record(i: int, rng: random.Random, *, route: str = "ct_chest", rouge: float = 0.6,
                     sites: tuple[str, ...] = ("SITE_A", "SITE_B", "SITE_C"), words: tuple[str, ...] = VOCABULARY,
                     length: tuple[int, int] = (20, 40), minutes: int = 20) -> EditRecord:
    """Record ``i`` of a stream: ROUGE-L ~ N(rouge, 0.15), ECR ~ N(0.7, 0.2), UER ~ N(0.2, 0.15), 40 % accepted."""
    findings = " ".join(rng.choice(words) for _ in range(rng.randint(*length)))
    quality = {"rougeL": _clip(rng.gauss(rouge, 0.15)), "ecr": _clip(rng.gauss(0.7, 0.2)),
               "uer": _clip(rng.gauss(0.2, 0.15))}
    return EditRecord(
        record_id=f"{route}-{i}", accession=f"ACC{route}{i}", event_id=f"e-{route}-{i}", route=route,
        site=rng.choice(sites), adapter_name=route, adapter_version="v1", findings=findings,
        draft="drafted impression", final="signed impression", accepted_unchanged=rng.random() < 0.4,
        signed_at=START + timedelta(minutes=minutes * i), captured_at=START + timedelta(minutes=minutes * i),
        quality=quality,
    )
