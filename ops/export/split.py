"""Patient-level splits: every report of one patient lands in the same split, in every export.

Stage: export. Input: a patient id (or, when a sender gave none, the accession: one study is then its own group).
Output: ``train`` / ``validation`` / ``test``. Failure modes: none. The bucket is sha256 of a fixed namespace and the
id, so adding records later never moves a patient between splits.
"""

from __future__ import annotations

import hashlib

SPLIT_NAMESPACE = "impression-gateway/export/split/v1"
SPLITS: tuple[tuple[str, int], ...] = (("train", 80), ("validation", 10), ("test", 10))


def split_of(patient_key: str, splits: tuple[tuple[str, int], ...] = SPLITS) -> str:
    """The split of one patient: a stable bucket in [0, sum of shares) mapped onto the shares in order."""
    digest = hashlib.sha256(f"{SPLIT_NAMESPACE}|{patient_key}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % sum(share for _, share in splits)
    for name, share in splits:
        if bucket < share:
            return name
        bucket -= share
    raise AssertionError("unreachable: bucket below the total of the shares")


def patient_key(patient_id: str, accession: str) -> str:
    return f"patient:{patient_id}" if patient_id else f"accession:{accession}"
