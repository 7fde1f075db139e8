"""Post stage, outbound side: deliver one draft to the reporting system as HL7 v2 and/or FHIR.

Input: a ``DraftImpression``. Output: a ``PostResult`` (the target's MSA-1, the FHIR report URL); a channel that is not
configured is not used. Failure modes: the MLLP target answers AE/CE or not in time → retried with backoff up to
``draft_mllp_retries`` times, then ``RetryLater``; AR/CR (the target will never take it) → ``Reject``; the FHIR
server answers 5xx or is down → ``RetryLater``, 4xx → ``Reject``.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import structlog

from gateway.fhir.outbound import post_draft_fhir
from gateway.hl7 import build_draft_oru
from gateway.mllp import MllpClient, MllpTarget, ack_code
from gateway.settings import GatewaySettings
from schemas import DraftImpression, GatewayError, PostResult, Reject, RetryLater, Skip

log = structlog.get_logger("gateway.post")


class DraftPoster:
    def __init__(self, settings: GatewaySettings, *, backoff_s: float = 0.5):
        self._settings = settings
        self._backoff_s = backoff_s
        self._mllp = (
            MllpClient(MllpTarget.parse(settings.draft_mllp_target), timeout_s=settings.draft_mllp_timeout_s)
            if settings.draft_mllp_target else None
        )
        self._http = httpx.AsyncClient(timeout=30.0) if settings.fhir_server_url else None

    @property
    def channels(self) -> list[str]:
        return [name for name, on in (("hl7v2", self._mllp), ("fhir", self._http)) if on is not None]

    async def post(self, draft: DraftImpression) -> PostResult:
        """Posts on every configured channel; one channel's outage does not hold back the other.

        Both channels are idempotent on retry (the ORU keeps one MSH-10 per draft, the FHIR create
        is conditional on the draft identifier), so after a failure the whole post can be redone.
        """
        hl7_ack, fhir_url, skipped = "", "", ""
        failures: list[GatewayError] = []
        if self._mllp is not None:
            try:
                hl7_ack = await self._post_hl7(draft)
            except GatewayError as exc:
                failures.append(exc)
        if self._http is not None:
            try:
                fhir_url = await post_draft_fhir(self._http, self._settings.fhir_server_url, draft,
                                                 token=self._settings.fhir_server_token)
            except Skip as exc:  # e.g. the EHR already holds a signed report for this accession
                skipped = exc.code
            except GatewayError as exc:
                failures.append(exc)
        if failures:
            raise next((f for f in failures if isinstance(f, RetryLater)), failures[0])
        return PostResult(draft=draft, hl7_ack=hl7_ack, fhir_report_url=fhir_url, skipped_reason=skipped)

    async def _post_hl7(self, draft: DraftImpression) -> str:
        assert self._mllp is not None
        # One control id per draft (not per attempt), so the target can recognise our retries.
        control_id = uuid.uuid5(uuid.NAMESPACE_OID, f"draft|{draft.event_id}").hex[:20]
        message = build_draft_oru(draft, control_id=control_id,
                                  sending_application=self._settings.ack_sending_application,
                                  sending_facility=self._settings.ack_sending_facility or draft.site)
        last = ""
        for attempt in range(self._settings.draft_mllp_retries):
            try:
                last = ack_code(await self._mllp.send(message))
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                last = type(exc).__name__
            if last in ("AA", "CA"):
                return last
            if last in ("AR", "CR"):
                raise Reject("draft_rejected_by_target", f"MLLP target answered {last}", accession=draft.accession)
            log.warning("post_hl7_retry", accession=draft.accession, attempt=attempt + 1, answer=last)
            await asyncio.sleep(self._backoff_s * 2**attempt)
        raise RetryLater("draft_target_unavailable", f"MLLP target last answered {last or 'nothing'}",
                         accession=draft.accession)

    async def close(self) -> None:
        if self._mllp is not None:
            await self._mllp.close()
        if self._http is not None:
            await self._http.aclose()
