"""The hospital edge: HL7 v2 and FHIR in and out, MLLP, the HTTP app. HL7/FHIR objects never leave here."""
