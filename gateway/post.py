"""Post stage, outbound side: send one draft to one destination (HL7 v2 over MLLP, or FHIR), or withdraw it.

Input: a ``DraftImpression``, its control id / version, and what it replaces. Output: the MSA-1, the FHIR report URL,
or a ``PostResult`` of a withdrawal. Failure modes: one send per call, the retries are the caller's (ops/delivery.py):
AE/CE, no answer, refused or down → ``RetryLater``; AR/CR → ``Reject``; FHIR 5xx/408/429/412 or down → ``RetryLater``,
another 4xx → ``Reject``; a signed report there → ``Skip``.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Sequence

import httpx
import structlog

from gateway.fhir.outbound import post_draft_fhir, replace_draft_fhir, withdraw_draft_fhir
from gateway.hl7.outbound import WITHDRAWN_OBX_11, build_draft_oru, build_withdrawal_oru
from gateway.mllp import MllpClient, MllpTarget, ack_code, client_ssl_context
from gateway.settings import GatewaySettings
from schemas import DraftImpression, GatewayError, PostResult, Reject, ReportStatus, RetryLater, Skip
from schemas.network import is_loopback

log = structlog.get_logger("gateway.post")
# HL7 v2.5.1 §2.9.2 and table 0008: AR "application reject" (CR "commit reject", enhanced mode) refuses the message as
# such (type, version, processing id, content): sent again it is refused again, so it is rejected, with the reason.
# AE "application error" (CE "commit error") is the receiver failing to process it now (our own intake answers AE when
# the broker is down): retried, as is no answer at all.
ACCEPTED = frozenset({"AA", "CA"})
REFUSED = frozenset({"AR", "CR"})


def _mllp_client(settings: GatewaySettings) -> MllpClient:
    """The draft target's client: over TLS when asked (no fallback to clear text when the handshake fails: the send
    fails and is retried); a warning when drafts would leave this host in clear."""
    target = MllpTarget.parse(settings.draft_mllp_target)
    tls: ssl.SSLContext | None = None
    if settings.draft_mllp_tls or settings.draft_mllp_tls_ca or settings.draft_mllp_tls_cert:
        tls = client_ssl_context(settings.draft_mllp_tls_ca, settings.draft_mllp_tls_cert, settings.draft_mllp_tls_key)
    elif not is_loopback(target.host):
        log.warning("draft_mllp_plaintext", target=settings.draft_mllp_target,
                    reason="drafts carry report text; set IG_DRAFT_MLLP_TLS (README \"MLLP security\")")
    return MllpClient(target, timeout_s=settings.draft_mllp_timeout_s, ssl_context=tls)


class DraftPoster:
    def __init__(self, settings: GatewaySettings, *, backoff_s: float = 0.1):
        self._settings = settings
        self._backoff_s = backoff_s
        self._mllp = _mllp_client(settings) if settings.draft_mllp_target else None
        self._http = httpx.AsyncClient(timeout=settings.fhir_server_timeout_s) if settings.fhir_server_url else None

    @property
    def channels(self) -> list[str]:
        return [name for name, on in (("hl7v2", self._mllp), ("fhir", self._http)) if on is not None]

    def timeout_s(self, channel: str) -> float:
        """How long one send to ``channel`` may take (a FHIR send is up to four requests)."""
        return self._settings.draft_mllp_timeout_s if channel == "hl7v2" else 4 * self._settings.fhir_server_timeout_s

    def _sender(self, draft: DraftImpression, control_id: str) -> dict[str, str]:
        return {"control_id": control_id, "sending_application": self._settings.ack_sending_application,
                "sending_facility": self._settings.ack_sending_facility or draft.site}

    async def send_hl7(self, draft: DraftImpression, *, control_id: str, replaces: str = "") -> str:
        """One ORU^R01 of ``draft`` (replacing the draft sent as MSH-10 ``replaces``, if given); its MSA-1."""
        if self._mllp is None:
            raise Skip("mllp_target_not_configured", "no MLLP draft target configured", accession=draft.accession)
        s = self._settings  # a replacement keeps the draft's status (R or P) unless the RIS replaces only on C
        message = build_draft_oru(draft, **self._sender(draft, control_id), status=s.draft_hl7_status,
                                  replaces=replaces, replacement_status="C" if s.draft_replacement_correction else "")
        return await self._exchange(message, draft, answers_retried=False)

    async def send_fhir(self, draft: DraftImpression, *, version: str, replaces_url: str = "",
                        event_ids: Sequence[str] = ()) -> str:
        """The draft report created, or the earlier one replaced (``replaces_url`` / ``event_ids``); its URL."""
        if self._http is None:
            raise Skip("fhir_target_not_configured", "no FHIR server URL configured", accession=draft.accession)
        s = self._settings
        if replaces_url or event_ids:
            return await replace_draft_fhir(self._http, s.fhir_server_url, draft, version=version,
                                            replaces_url=replaces_url, event_ids=event_ids, token=s.fhir_server_token,
                                            status=s.draft_fhir_status)
        return await post_draft_fhir(self._http, s.fhir_server_url, draft, token=s.fhir_server_token, version=version,
                                     status=s.draft_fhir_status)

    async def withdraw(self, draft: DraftImpression, status: ReportStatus, *, hl7_posted: bool,
                       fhir_report_url: str) -> PostResult:
        """Withdraws a posted draft where it went: over HL7 when ``hl7_posted`` (an ORU^R01 posting it as wrong), on
        the FHIR server when ``fhir_report_url`` (the report updated to entered-in-error / cancelled)."""
        hl7_ack, fhir_url, sent = "", "", []
        failures: list[GatewayError] = []
        if self._mllp is not None and hl7_posted:
            try:
                # One control id per withdrawal (not per attempt), so the target can recognise our retries.
                control_id = uuid.uuid5(uuid.NAMESPACE_OID, f"withdraw|{draft.event_id}").hex[:20]
                message = build_withdrawal_oru(draft, status, **self._sender(draft, control_id))
                hl7_ack = await self._exchange(message, draft, answers_retried=True)
                sent.append(f"HL7 OBX-11 {WITHDRAWN_OBX_11} (ACK {hl7_ack})")
            except GatewayError as exc:
                failures.append(exc)
        if self._http is not None and fhir_report_url:
            try:
                fhir_url, fhir_status = await withdraw_draft_fhir(
                    self._http, self._settings.fhir_server_url, draft, fhir_report_url, status,
                    token=self._settings.fhir_server_token)
                sent.append(f"FHIR {fhir_status}")
            except Skip as exc:  # e.g. the EHR signed that report since: a signed report is never touched
                sent.append(f"FHIR not changed ({exc.code})")
            except GatewayError as exc:
                failures.append(exc)
        if failures:
            raise next((f for f in failures if isinstance(f, RetryLater)), failures[0])
        reason = f"report {status.value} at the source; " + (", ".join(sent) or "no channel to withdraw it on")
        return PostResult(draft=draft, hl7_ack=hl7_ack, fhir_report_url=fhir_url, withdrawn=True,
                          withdrawn_reason=reason)

    async def _exchange(self, message: bytes, draft: DraftImpression, *, answers_retried: bool) -> str:
        """Sends ``message`` and reads its ACK. A refused or dropped connection (a kept-open one the RIS closed) is
        tried again at once on a new one, ``draft_mllp_retries`` times in all; with ``answers_retried`` an AE or no
        answer in time are too (a withdrawal, which has no delivery lane behind it)."""
        assert self._mllp is not None
        last, attempts = "", max(1, self._settings.draft_mllp_retries)
        for attempt in range(attempts):
            try:
                last = ack_code(await self._mllp.send(message))
            except TimeoutError:  # before OSError: it is one; the whole timeout was waited already
                last = "TimeoutError"
                if not answers_retried:
                    break
            except (OSError, asyncio.IncompleteReadError) as exc:
                last = type(exc).__name__
            else:
                if last in ACCEPTED:
                    return last
                if last in REFUSED:
                    raise Reject("draft_rejected_by_target", f"MLLP target answered {last}", accession=draft.accession)
                if not answers_retried:
                    break
            if attempt + 1 < attempts:
                log.info("post_hl7_again", accession=draft.accession, attempt=attempt + 1, answer=last)
                await asyncio.sleep(self._backoff_s * 2**attempt)
        raise RetryLater("draft_target_unavailable", f"MLLP target last answered {last or 'nothing'}",
                         accession=draft.accession)

    async def close(self) -> None:
        if self._mllp is not None:
            await self._mllp.close()
        if self._http is not None:
            await self._http.aclose()
