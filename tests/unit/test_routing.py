"""Routing: the first matching row wins; a report the classifier could not place goes to the default route."""

from __future__ import annotations

import pytest

from model.inference.routing import RoutingTable, route_event
from schemas import BodySystem, Modality, ReportEvent, ReportStatus, Skip, Source


def _event(modality: Modality, body: BodySystem, classified_by: str = "cpt", **extra: object) -> ReportEvent:
    return ReportEvent(event_id="e", source=Source.HL7V2, message_control_id="1", accession="A1",
                       status=ReportStatus.PRELIMINARY, modality=modality, body_system=body,
                       classified_by=classified_by, findings="Lungs clear.", **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(("modality", "body", "classified_by", "route"), [
    (Modality.CT, BodySystem.CHEST, "cpt", "ct_chest"),
    (Modality.XR, BodySystem.CHEST, "keyword", "xr_chest"),
    (Modality.PT, BodySystem.WHOLE_BODY, "loinc", "pet_ct"),
    (Modality.NM, BodySystem.CARDIOVASCULAR, "cpt", "general"),  # NM is not PET
    (Modality.OT, BodySystem.OTHER, "unknown", "general"),
    (Modality.PT, BodySystem.OTHER, "unknown", "general"),  # modality guessed, body unknown: still the default
])
def test_routes(modality: Modality, body: BodySystem, classified_by: str, route: str) -> None:
    assert route_event(_event(modality, body, classified_by), RoutingTable.load()).name == route


def test_chinese_head_ct_has_its_own_route() -> None:
    event = _event(Modality.CT, BodySystem.HEAD, language="zh")
    assert route_event(event, RoutingTable.load()).name == "ct_head_zh"


def test_signed_reports_are_not_drafted() -> None:
    with pytest.raises(Skip):
        route_event(_event(Modality.CT, BodySystem.CHEST).model_copy(update={"status": ReportStatus.FINAL}),
                    RoutingTable.load())
