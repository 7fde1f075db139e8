"""FHIR R4 at the hospital edge: DiagnosticReport/Bundle in (``inbound``), drafts out (``outbound``).

Resources are validated with the fhir.resources R4B models (4.3.0, the R4-compatible set that
fhir.resources 8 ships; it has no 4.0.1 package), pinned by explicit import, never the R5 default.
FHIR objects never leave this package: callers get ``ReportEvent`` lists and plain JSON dicts.
"""

from gateway.fhir.inbound import parse_fhir
from gateway.fhir.outbound import build_draft_bundle, post_draft_fhir
from gateway.fhir.outcome import operation_outcome

__all__ = ["build_draft_bundle", "operation_outcome", "parse_fhir", "post_draft_fhir"]
