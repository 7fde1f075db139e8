"""Quality metrics of drafted impressions against the signed finals (issue 4, drift evaluation).

``score_pair`` / ``score_pairs`` / ``aggregate`` are the entry points; see README.md beside this
file for the definitions and a worked example of each metric.
"""

from ops.metrics.coverage import factual_consistency
from ops.metrics.score import FIELDS, Pair, PairScores, aggregate, score_pair, score_pairs

__all__ = ["FIELDS", "Pair", "PairScores", "aggregate", "factual_consistency", "score_pair", "score_pairs"]
