"""Backfill sources: historical report files split into messages/resources and normalised by the live parsers.

``expand`` lists the files under the paths given; ``BackfillReader.units(path, start)`` yields one ``Unit`` per HL7
message or FHIR resource from a byte offset on. Nothing here writes anywhere but its own reference index.
"""

from gateway.backfill.reader import BackfillReader, expand
from gateway.backfill.units import Unit

__all__ = ["BackfillReader", "Unit", "expand"]
