"""Who may call the HTTP app: named bearer tokens with scopes (RFC 6750), fail closed.

Input: ``GatewaySettings`` (tokens file, ``IG_AUTH_TOKENS``, the legacy token: ``intake`` only, open aggregates,
client-certificate scopes) and each request's ``Authorization`` header. Output: the principal, else a ``Refusal``
(401 with the §3 challenge, 403 ``insufficient_scope``). Only SHA-256 digests are kept; no token is ever logged.
Failure modes: a malformed tokens source → ``AuthConfigError`` naming it; no credentials → every check refuses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import structlog
from fastapi import HTTPException, Request

from gateway import metrics
from gateway.settings import GatewaySettings
from schemas.network import is_loopback
from schemas.scopes import DASHBOARD_READ as DASHBOARD_READ  # ``X as X``: re-exported (gateway.http, the tests)
from schemas.scopes import INTAKE as INTAKE
from schemas.scopes import LEGACY_SCOPES as LEGACY_SCOPES
from schemas.scopes import OPERATOR as OPERATOR
from schemas.scopes import REPORT_TEXT_READ as REPORT_TEXT_READ
from schemas.scopes import SCOPES as SCOPES

log = structlog.get_logger("gateway.auth")

LEGACY_NAME = "default"  # IG_FHIR_BEARER_TOKEN, from before named tokens: LEGACY_SCOPES (a FHIR sender's)
ANONYMOUS, CLIENT_CERTIFICATE = "anonymous", "client-certificate"  # principals without a token
DENIED = "a valid bearer token is required"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # names are logged: no room for anything else
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_KEYS = frozenset({"name", "scopes", "sha256", "token"})

# Returns the principal (the token's name) when the request holds the scope, raises HTTPException 401/403 otherwise.
Authorise = Callable[[Request, str], str]


class AuthConfigError(ValueError):
    """A tokens source that cannot be used; the message names the source and entry, never a token."""


@dataclass(frozen=True)
class Token:
    name: str
    scopes: frozenset[str]
    digests: tuple[bytes, ...]  # SHA-256 of each valid value: two while a token is rotated


@dataclass(frozen=True)
class Refusal:
    status: int  # 401 (no or an invalid token) or 403 (the token lacks the scope)
    reason: str  # missing | invalid_token | insufficient_scope (a metric label and the log line)
    challenge: str  # the WWW-Authenticate value (RFC 6750 §3)
    scope: str
    principal: str | None = None

    @property
    def detail(self) -> str:
        return f"the token lacks the {self.scope} scope" if self.status == 403 else DENIED


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _token(raw: Any, where: str) -> Token:
    """One ``{name, scopes, sha256 | [sha256, …] | token}`` entry; errors name the entry, never a value."""
    if not isinstance(raw, dict) or not set(raw) <= _KEYS:
        raise AuthConfigError(f"{where}: a token has only the keys {sorted(_KEYS)}")
    name, scopes = raw.get("name"), raw.get("scopes")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AuthConfigError(f"{where}: a token's name is 1-64 letters, digits, '.', '_' or '-'")
    if not isinstance(scopes, list) or not scopes or not set(scopes) <= SCOPES:
        raise AuthConfigError(f"{where}: token {name!r} needs scopes, a list of {sorted(SCOPES)}")
    hashes = raw.get("sha256", [])
    hashes = [hashes] if isinstance(hashes, str) else hashes
    if not isinstance(hashes, list) or not all(isinstance(h, str) and _HEX.fullmatch(h) for h in hashes):
        raise AuthConfigError(f"{where}: token {name!r}: sha256 is 64 hex digits, or a list of them")
    plain = raw.get("token", "")
    if not isinstance(plain, str) or (not hashes and not plain):
        raise AuthConfigError(f"{where}: token {name!r} needs sha256 (or token)")
    digests = tuple(bytes.fromhex(h) for h in hashes) + ((digest(plain),) if plain else ())
    return Token(name, frozenset(scopes), digests)


def tokens_from_file(path: Path) -> list[Token]:
    """``[[token]]`` tables of a TOML file (README "Authentication")."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AuthConfigError(f"IG_AUTH_TOKENS_FILE {path}: cannot be read ({type(exc).__name__})") from None
    entries = data.get("token", [])
    if not isinstance(entries, list) or set(data) - {"token"}:
        raise AuthConfigError(f"IG_AUTH_TOKENS_FILE {path}: expected only [[token]] tables")
    return [_token(raw, f"IG_AUTH_TOKENS_FILE {path} token {i + 1}") for i, raw in enumerate(entries)]


@cache
def _warn_legacy() -> None:
    """Once per process (the tokens are re-read on every change of the file): the token is named, never shown."""
    log.warning("legacy_token_in_use", principal=LEGACY_NAME, scopes=sorted(LEGACY_SCOPES),
                advice="IG_FHIR_BEARER_TOKEN is legacy: give each client a named token in IG_AUTH_TOKENS_FILE")


def tokens_from_settings(settings: GatewaySettings, *, with_file: bool = True) -> list[Token]:
    found = tokens_from_file(settings.auth_tokens_file) if with_file and settings.auth_tokens_file else []
    if listed := settings.auth_tokens.get_secret_value():
        try:
            entries = json.loads(listed)
        except json.JSONDecodeError:
            raise AuthConfigError("IG_AUTH_TOKENS: not JSON") from None
        if not isinstance(entries, list):
            raise AuthConfigError("IG_AUTH_TOKENS: expected a JSON list of tokens")
        found += [_token(raw, f"IG_AUTH_TOKENS token {i + 1}") for i, raw in enumerate(entries)]
    if legacy := settings.fhir_bearer_token.get_secret_value():
        found.append(Token(LEGACY_NAME, LEGACY_SCOPES, (digest(legacy),)))
        _warn_legacy()
    names = [t.name for t in found]
    if doubled := sorted({n for n in names if names.count(n) > 1}):
        raise AuthConfigError(f"token names must be unique: {doubled} more than once (rotate with a list of sha256)")
    return found


class Credentials:
    """The tokens, the scopes open to anyone (``IG_DASHBOARD_OPEN``) and those a verified client certificate holds."""

    def __init__(self, tokens: Iterable[Token], *, open_scopes: Iterable[str] = (),
                 certificate_scopes: Iterable[str] = ()):
        self.tokens = tuple(tokens)
        self.open_scopes, self.certificate_scopes = frozenset(open_scopes), frozenset(certificate_scopes)

    @property
    def configured(self) -> bool:
        return bool(self.tokens or self.certificate_scopes)

    def _holder(self, given: str) -> Token | None:
        presented, found = digest(given), None
        for token in self.tokens:  # every digest is compared (constant time each): no early answer to time
            for known in token.digests:
                if hmac.compare_digest(presented, known):
                    found = token
        return found

    def decide(self, authorization: str, scope: str, realm: str) -> str | Refusal:
        """The principal allowed ``scope``, or the refusal (RFC 6750 §3 and §3.1)."""
        scheme, _, given = authorization.partition(" ")
        bearer, given = scheme.lower() == "bearer", given.strip()  # RFC 9110 §11.1: auth-schemes are case-insensitive
        challenge = f'Bearer realm="{realm}"'
        if not (bearer and given):
            # §3.1: a request without (bearer) credentials gets the challenge without an error code.
            if scope in self.open_scopes:
                return ANONYMOUS
            if scope in self.certificate_scopes:  # only set with IG_HTTP_TLS_CLIENT_CA: every peer is verified
                return CLIENT_CERTIFICATE
            return Refusal(401, "missing", challenge, scope)
        token = self._holder(given)
        if token is None:
            return Refusal(401, "invalid_token", f'{challenge}, error="invalid_token"', scope)
        if scope not in token.scopes:
            return Refusal(403, "insufficient_scope", f'{challenge}, error="insufficient_scope", scope="{scope}"',
                           scope, token.name)
        return token.name


def credentials_for(settings: GatewaySettings, tokens: Iterable[Token]) -> Credentials:
    certificate = settings.http_tls_client_scopes if settings.http_tls_client_ca else ()
    return Credentials(tokens, open_scopes=(DASHBOARD_READ,) if settings.dashboard_open else (),
                       certificate_scopes=certificate)


class HttpAuth:
    """The credentials of one HTTP app; the tokens file is re-read when its content changes (rotation without a
    restart), checked at most every ``recheck_s``. A file that turns invalid drops its tokens (fail closed)."""

    def __init__(self, settings: GatewaySettings, *, recheck_s: float = 1.0):
        bad = set(settings.http_tls_client_scopes) - SCOPES
        if bad:
            raise AuthConfigError(f"IG_HTTP_TLS_CLIENT_SCOPES: unknown scopes {sorted(bad)}; known {sorted(SCOPES)}")
        self._settings, self._recheck_s = settings, recheck_s
        self._seen, self._checked = self._file_digest(), time.monotonic()
        self._credentials = credentials_for(settings, tokens_from_settings(settings))

    def _file_digest(self) -> bytes | None:
        path = self._settings.auth_tokens_file
        try:
            return hashlib.sha256(path.read_bytes()).digest() if path else None
        except OSError:
            return b""

    @property
    def credentials(self) -> Credentials:
        if self._settings.auth_tokens_file is None or time.monotonic() - self._checked < self._recheck_s:
            return self._credentials
        self._checked = time.monotonic()
        seen = self._file_digest()
        if seen != self._seen:
            self._seen = seen
            try:
                tokens = tokens_from_settings(self._settings)
                log.info("auth_tokens_reloaded", tokens=[t.name for t in tokens])
            except AuthConfigError as exc:
                tokens = tokens_from_settings(self._settings, with_file=False)
                log.error("auth_tokens_file_invalid", reason=str(exc), tokens=[t.name for t in tokens])
            self._credentials = credentials_for(self._settings, tokens)
        return self._credentials

    def check(self, request: Request, scope: str, realm: str) -> str | Refusal:
        decided = self.credentials.decide(request.headers.get("authorization", ""), scope, realm)
        outcome = decided.reason if isinstance(decided, Refusal) else "granted"
        metrics.HTTP_AUTH.labels(scope=scope, outcome=outcome).inc()
        if isinstance(decided, Refusal):
            log.info("http_auth_refused", reason=decided.reason, scope=scope, path=request.url.path,
                     principal=decided.principal)
        return decided

    def require(self, realm: str) -> Authorise:
        """The check for a router built outside the gateway: ``HTTPException`` 401/403 with the challenge."""

        def authorise(request: Request, scope: str) -> str:
            decided = self.check(request, scope, realm)
            if isinstance(decided, Refusal):
                raise HTTPException(decided.status, decided.detail, headers={"WWW-Authenticate": decided.challenge})
            return decided

        return authorise




def startup_problem(settings: GatewaySettings) -> str | None:
    """Why ``serve`` must not start its HTTP app with these settings, in one line naming the setting; else None."""
    try:
        credentials = HttpAuth(settings).credentials
    except AuthConfigError as exc:
        return str(exc)
    if (settings.http_tls_cert is None) != (settings.http_tls_key is None):
        return "IG_HTTP_TLS_CERT and IG_HTTP_TLS_KEY are set together (HTTPS needs both)"
    if settings.http_tls_client_ca and not settings.http_tls_cert:
        return "IG_HTTP_TLS_CLIENT_CA needs IG_HTTP_TLS_CERT and IG_HTTP_TLS_KEY (mutual TLS is TLS first)"
    if not is_loopback(settings.http_host) and not credentials.configured and not settings.http_tls_client_ca:
        return (f"IG_HTTP_HOST={settings.http_host} is not a loopback address and no HTTP credentials are configured: "
                "set IG_AUTH_TOKENS_FILE (or IG_AUTH_TOKENS, or IG_HTTP_TLS_CLIENT_CA for mutual TLS)")
    return None
