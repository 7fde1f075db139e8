"""Quality metrics of drafted impressions against the signed finals (issue 4, drift evaluation).

``score_pair`` / ``score_pairs`` / ``aggregate`` / ``methods`` are the entry points; see README.md beside this
file for the definitions, the libraries behind each metric and a worked example of each.
"""

from ops.metrics.coverage import factual_consistency
from ops.metrics.score import FIELDS, Pair, PairScores, aggregate, methods, score_pair, score_pairs

__all__ = ["FIELDS", "Pair", "PairScores", "aggregate", "factual_consistency", "methods", "score_pair", "score_pairs"]
