"""Hypothesis profiles of the fuzz tests (README "Development", Fuzzing).

``ci`` (the default, part of ``make test``): derandomized, 200 examples per target, no example database, so every
run tries the same inputs. ``long`` (``make fuzz``: ``HYPOTHESIS_PROFILE=long``): 20,000 random examples per target,
failures kept in .data/hypothesis so the next run tries them first.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

# A deadline only catches a hang (a regex that backtracks, a loop that never ends): far above any honest example,
# so a busy machine never fails it.
_COMMON = {"deadline": timedelta(seconds=10), "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
           "print_blob": True}
# No explain phase in ci: it reruns a failure thousands of times to annotate it (minutes); ``long`` keeps it.
settings.register_profile("ci", max_examples=200, derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.generate, Phase.shrink], **_COMMON)
settings.register_profile("long", max_examples=20_000, database=DirectoryBasedExampleDatabase(".data/hypothesis"),
                          **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
