"""The scopes of the HTTP app's bearer tokens (README "Authentication"): names only, no dependencies.

Input: none. Output: the scope names, the set ``IG_AUTH_TOKENS_FILE`` entries may list, and the scopes of the legacy
``IG_FHIR_BEARER_TOKEN``. One list for gateway/auth.py (the checks), ops/drift (the dashboard's routes) and the
command line (``--help`` choices, without importing the HTTP stack). Failure modes: none.
"""

from __future__ import annotations

INTAKE, DASHBOARD_READ, REPORT_TEXT_READ = "intake", "dashboard-read", "report-text-read"
OPERATOR = "operator"  # operator actions on the dashboard (replay a dead letter); never open, audited by name
SCOPES = frozenset({INTAKE, DASHBOARD_READ, REPORT_TEXT_READ, OPERATOR})
# IG_FHIR_BEARER_TOKEN predates named tokens and was documented as the FHIR sender's token: it gets what a FHIR
# sender needs (POST /fhir), never report text or operator actions (those need a named token from the file).
LEGACY_SCOPES = frozenset({INTAKE})
