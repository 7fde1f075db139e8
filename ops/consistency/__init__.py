"""The consistency check before posting (issue 13): a draft against its own findings → flags; the route's policy.

``check(draft, findings)`` is pure; ``enforce(draft, request, rule, ...)`` applies the routing table's policy and
returns the draft that goes on, carrying its ``ConsistencyCheck``. Rules and examples: README.md beside this file.
"""

from ops.consistency.check import CHECKER_VERSION, check
from ops.consistency.policy import enforce

__all__ = ["CHECKER_VERSION", "check", "enforce"]
