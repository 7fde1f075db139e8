"""The inbound MLLP listener as ``serve`` builds it, and whether it may start at all (fail closed off loopback).

Input: ``GatewaySettings``. Output: ``refusal_to_start`` → one line naming the settings to fix, or ``None``;
``listener`` → an ``MllpServer`` with TLS, the sender allow-list and the limits. Failure modes: unreadable TLS files
or a malformed senders file are a refusal (``serve`` exits 2), never a listener that accepts more than configured.
"""

from __future__ import annotations

import ssl

import structlog

from gateway.mllp import FrameHandler, MllpServer, server_ssl_context
from gateway.mllp_limits import MllpLimits
from gateway.mllp_senders import SenderAllowList, SenderCheck
from gateway.settings import GatewaySettings
from schemas.network import is_loopback

log = structlog.get_logger("gateway.mllp")

_MUTUAL = "IG_TLS_CERT, IG_TLS_KEY, IG_TLS_CLIENT_CA and IG_MLLP_SENDERS_FILE"




def _tls(settings: GatewaySettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return server_ssl_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)


def _senders(settings: GatewaySettings) -> SenderCheck | None:
    if settings.mllp_senders_file is None:
        return None
    return SenderCheck(SenderAllowList.load(settings.mllp_senders_file),
                       sending_application=settings.ack_sending_application,
                       sending_facility=settings.ack_sending_facility)


def refusal_to_start(settings: GatewaySettings) -> str | None:
    """Why the MLLP listener must not start with these settings, in one line naming them; ``None`` when it may."""
    g = settings
    if (g.tls_cert is None) != (g.tls_key is None):
        return "MLLP TLS needs both IG_TLS_CERT and IG_TLS_KEY"
    if g.tls_client_ca is not None and g.tls_cert is None:
        return "IG_TLS_CLIENT_CA (MLLP client certificates) needs IG_TLS_CERT and IG_TLS_KEY"
    if g.mllp_senders_file is not None and g.tls_client_ca is None:
        return "IG_MLLP_SENDERS_FILE needs mutual TLS: set IG_TLS_CLIENT_CA (with IG_TLS_CERT and IG_TLS_KEY)"
    try:
        _tls(g)
        _senders(g)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return f"MLLP TLS or senders settings cannot be used: {exc}"
    mutual = g.tls_client_ca is not None and g.mllp_senders_file is not None
    if not is_loopback(g.mllp_host) and not mutual and not g.mllp_allow_plaintext:
        return (f"MLLP would listen on {g.mllp_host or 'every address'} without mutual TLS and a sender allow-list: set "
                f"{_MUTUAL}, or IG_MLLP_ALLOW_PLAINTEXT=true where the interface network is isolated (README \"MLLP "
                f"security\")")
    return None


def listener(settings: GatewaySettings, handler: FrameHandler) -> MllpServer:
    """The listener of ``serve`` (call ``refusal_to_start`` first: this raises what it would have refused)."""
    tls, senders = _tls(settings), _senders(settings)
    if not is_loopback(settings.mllp_host) and senders is None:
        log.warning("mllp_not_mutual_tls", host=settings.mllp_host, tls=tls is not None,
                    reason="IG_MLLP_ALLOW_PLAINTEXT: any peer that reaches the port may send as any sender")
    elif tls is not None and tls.verify_mode == ssl.CERT_REQUIRED and senders is None:
        log.warning("mllp_senders_unrestricted", reason="no IG_MLLP_SENDERS_FILE: any certificate from the CA may "
                    "send as any MSH-3/MSH-4")
    return MllpServer(handler, max_message_bytes=settings.max_message_bytes, ssl_context=tls,
                      limits=MllpLimits.from_settings(settings), senders=senders)
