"""The Provenance of a draft DiagnosticReport: which model, adapter and prompt wrote it.

Stage: post (used by ``outbound.build_draft_bundle``). Input: a ``DraftImpression``, the ``urn:uuid`` of the draft
report in the same transaction, the time. Output: a FHIR R4 Provenance JSON dict with a contained Device naming the
drafter. Failure modes: none (pure). "AI-generated" is explicit three ways (security label AIAST and ``meta.tag``,
Provenance ``policy``/``reason``, a Device author): gateway/README.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.events import DraftImpression

AI_SECURITY_LABEL = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}
AI_TAG = {"system": "urn:impression-gateway:tag", "code": "ai-generated", "display": "AI-generated draft"}
AI_POLICY = "urn:impression-gateway:policy:ai-generated-draft"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
DEVICE_ID = "drafter"


def drafter_label(draft: DraftImpression) -> str:
    """``<model> adapter <name>@<version>, prompt <version>, drafter <llm|retrieval>``."""
    version = f"@{draft.adapter_version}" if draft.adapter_version else ""
    prompt = draft.prompt_version or "unversioned"
    return f"{draft.model} adapter {draft.adapter_name}{version}, prompt {prompt}, drafter {draft.drafter.value}"


def _device(draft: DraftImpression) -> dict[str, Any]:
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": DEVICE_ID,
        "deviceName": [{"name": drafter_label(draft), "type": "model-name"}],
        "type": {"text": "AI language model (draft impression generator)"},
    }
    if draft.adapter_version:
        device["version"] = [{"value": draft.adapter_version}]
    return device


def _agent(role: str, who: dict[str, str]) -> dict[str, Any]:
    return {"type": {"coding": [{"system": PARTICIPANT_TYPE, "code": role}]}, "who": who}


def draft_provenance(draft: DraftImpression, report_url: str, now: datetime) -> dict[str, Any]:
    label = drafter_label(draft)
    return {
        "resourceType": "Provenance",
        "meta": {"security": [AI_SECURITY_LABEL]},
        "contained": [_device(draft)],
        "target": [{"reference": report_url}],
        "recorded": now.isoformat(timespec="milliseconds"),
        "policy": [AI_POLICY],
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "CREATE", "display": "create"}]},
        "reason": [{"text": "AI-generated draft impression; a radiologist must review it before signing"}],
        "agent": [
            # author: the model wrote the conclusion; assembler: the gateway built the resource.
            _agent("author", {"reference": f"#{DEVICE_ID}", "display": label}),
            _agent("assembler", {"display": "impression-gateway"}),
        ],
    }
