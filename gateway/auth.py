"""The one bearer-token check of the HTTP app (RFC 6750): FHIR intake and the dashboard's PHI routes.

Input: the request's ``Authorization`` header, the configured token (empty: open) and the realm.
Output: None when authorised, else the ``WWW-Authenticate`` challenge to answer 401 with (§3).
``require_bearer`` wraps it for routers built outside the gateway (ops may not import gateway, so the
composition root passes it in). Failure modes: none raised here except that 401 ``HTTPException``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request

Authorise = Callable[[Request], None]  # returns when authorised, raises HTTPException(401) otherwise
DENIED = "a valid bearer token is required"


def bearer_challenge(authorization: str, token: str, realm: str) -> str | None:
    """None when ``Authorization: Bearer <token>`` matches (or no token is configured), else the challenge."""
    if not token:
        return None
    scheme, _, given = authorization.partition(" ")
    bearer, given = scheme.lower() == "bearer", given.strip()  # RFC 9110 §11.1: auth-schemes are case-insensitive
    # Constant-time comparison, so the answer time does not leak how much of the token was right.
    if bearer and hmac.compare_digest(given.encode(), token.encode()):
        return None
    # RFC 6750 §3.1: no credentials, or another scheme (Basic …), get the challenge without an error code.
    return f'Bearer realm="{realm}"' + (', error="invalid_token"' if bearer and given else "")


def require_bearer(token: str, realm: str) -> Authorise:
    """The check as a callable for a router: 401 ``{"detail": …}`` with ``WWW-Authenticate`` when refused."""

    def authorise(request: Request) -> None:
        challenge = bearer_challenge(request.headers.get("authorization", ""), token, realm)
        if challenge is not None:
            raise HTTPException(401, DENIED, headers={"WWW-Authenticate": challenge})

    return authorise
