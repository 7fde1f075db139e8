"""Who may call the HTTP app (gateway/auth.py, issue 12): named tokens with scopes, RFC 6750 challenges, rotation
(two values at once, and a tokens file re-read without a restart), fail closed, and ``serve`` refusing to bind a
non-loopback address without credentials (the real command as a subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.auth import (
    ANONYMOUS,
    CLIENT_CERTIFICATE,
    SCOPES,
    AuthConfigError,
    Credentials,
    HttpAuth,
    Refusal,
    startup_problem,
    tokens_from_settings,
)
from gateway.settings import GatewaySettings
from ops.drift import web
from schemas.network import is_loopback
from tests.conftest import REPO

OLD, NEW, OTHER = "old-intake-token-0123456789", "new-intake-token-0123456789", "viewer-token-0123456789"
AUTH_ENV = ("IG_AUTH_TOKENS_FILE", "IG_AUTH_TOKENS", "IG_FHIR_BEARER_TOKEN", "IG_DASHBOARD_OPEN", "IG_HTTP_HOST",
            "IG_HTTP_TLS_CERT", "IG_HTTP_TLS_KEY", "IG_HTTP_TLS_CLIENT_CA", "IG_HTTP_TLS_CLIENT_SCOPES")


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_file(path: Path, *entries: tuple[str, list[str], list[str]]) -> Path:
    """``[[token]]`` tables: (name, scopes, sha256 values)."""
    path.write_text("".join(f'[[token]]\nname = "{name}"\nscopes = {json.dumps(scopes)}\nsha256 = {json.dumps(hashes)}\n'
                            for name, scopes, hashes in entries), encoding="utf-8")
    return path


def decide(credentials: Credentials, authorization: str, scope: str = "intake") -> str:
    """The principal, or ``<status> <WWW-Authenticate>``."""
    decided = credentials.decide(authorization, scope, "fhir")
    return f"{decided.status} {decided.challenge}" if isinstance(decided, Refusal) else decided


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in AUTH_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def two(tmp_path: Path) -> GatewaySettings:
    path = tokens_file(tmp_path / "tokens.toml", ("ris", ["intake"], [sha(OLD)]),
                       ("viewer", ["dashboard-read", "report-text-read"], [sha(OTHER)]))
    return GatewaySettings(auth_tokens_file=path)


@pytest.mark.parametrize(("authorization", "scope", "expected"), [
    (f"Bearer {OLD}", "intake", "ris"),
    (f"bearer  {OLD} ", "intake", "ris"),  # RFC 9110 §11.1: auth-schemes are case-insensitive
    ("", "intake", '401 Bearer realm="fhir"'),  # RFC 6750 §3.1: no credentials, no error code
    ("Basic b2xkOnRva2Vu", "intake", '401 Bearer realm="fhir"'),  # another scheme: as if none
    ("Bearer", "intake", '401 Bearer realm="fhir"'),
    ("Bearer nope", "intake", '401 Bearer realm="fhir", error="invalid_token"'),
    (f"Bearer {OLD}x", "intake", '401 Bearer realm="fhir", error="invalid_token"'),
    (f"Bearer {OLD}", "report-text-read", '403 Bearer realm="fhir", error="insufficient_scope", scope="report-text-read"'),
    (f"Bearer {OTHER}", "intake", '403 Bearer realm="fhir", error="insufficient_scope", scope="intake"'),
    (f"Bearer {OTHER}", "report-text-read", "viewer"),
])
def test_each_token_holds_its_scopes(two: GatewaySettings, authorization: str, scope: str, expected: str) -> None:
    assert decide(HttpAuth(two).credentials, authorization, scope) == expected


def test_with_nothing_configured_everything_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    credentials = HttpAuth(GatewaySettings()).credentials
    assert not credentials.configured
    for scope in SCOPES:
        assert decide(credentials, "", scope) == '401 Bearer realm="fhir"'
        assert decide(credentials, "Bearer anything", scope).startswith('401 Bearer realm="fhir", error="invalid_token"')


def test_open_aggregates_open_only_the_aggregates(clean_env: pytest.MonkeyPatch) -> None:
    credentials = HttpAuth(GatewaySettings(dashboard_open=True)).credentials
    assert decide(credentials, "", "dashboard-read") == ANONYMOUS
    assert decide(credentials, "", "report-text-read") == decide(credentials, "", "intake") == '401 Bearer realm="fhir"'
    assert not credentials.configured  # open aggregates are no credentials: serve still refuses 0.0.0.0


def test_client_certificate_scopes_apply_only_with_a_client_ca(tmp_path: Path) -> None:
    granted = GatewaySettings(http_tls_client_scopes=("intake",), http_tls_client_ca=tmp_path / "ca.pem")
    assert decide(HttpAuth(granted).credentials, "", "intake") == CLIENT_CERTIFICATE
    assert decide(HttpAuth(granted).credentials, "", "report-text-read") == '401 Bearer realm="fhir"'
    without_ca = GatewaySettings(http_tls_client_scopes=("intake",))
    assert decide(HttpAuth(without_ca).credentials, "", "intake") == '401 Bearer realm="fhir"'
    with pytest.raises(AuthConfigError, match="IG_HTTP_TLS_CLIENT_SCOPES"):
        HttpAuth(GatewaySettings(http_tls_client_scopes=("admin",)))


def test_the_legacy_token_is_default_with_the_intake_scope_only(clean_env: pytest.MonkeyPatch) -> None:
    credentials = HttpAuth(GatewaySettings(fhir_bearer_token=OLD)).credentials
    assert decide(credentials, f"Bearer {OLD}", "intake") == "default"
    for scope in SCOPES - {"intake"}:  # a FHIR sender's token: no dashboard, report text or operator actions
        assert decide(credentials, f"Bearer {OLD}", scope).startswith("403 "), scope


def test_two_values_of_one_token_are_valid_while_it_is_rotated(tmp_path: Path) -> None:
    path = tokens_file(tmp_path / "tokens.toml", ("ris", ["intake"], [sha(OLD), sha(NEW)]))
    credentials = HttpAuth(GatewaySettings(auth_tokens_file=path)).credentials
    assert decide(credentials, f"Bearer {OLD}") == decide(credentials, f"Bearer {NEW}") == "ris"


def test_the_tokens_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tokens_file(tmp_path / "tokens.toml", ("ris", ["intake"], [sha(OLD)]))
    env = json.dumps([{"name": "viewer", "scopes": ["dashboard-read"], "token": OTHER}])
    auth = HttpAuth(GatewaySettings(auth_tokens_file=path, auth_tokens=env), recheck_s=0)
    assert decide(auth.credentials, f"Bearer {OLD}") == "ris"
    assert decide(auth.credentials, f"Bearer {NEW}").startswith("401")
    tokens_file(path, ("ris", ["intake"], [sha(OLD), sha(NEW)]))  # step 1: both values
    assert decide(auth.credentials, f"Bearer {OLD}") == decide(auth.credentials, f"Bearer {NEW}") == "ris"
    tokens_file(path, ("ris", ["intake"], [sha(NEW)]))  # step 2: the old value is gone
    assert decide(auth.credentials, f"Bearer {OLD}").startswith("401")
    assert decide(auth.credentials, f"Bearer {NEW}") == "ris"
    path.write_text("[[token]]\nname = 'ris'\n", encoding="utf-8")  # broken: its tokens are dropped (fail closed)
    assert decide(auth.credentials, f"Bearer {NEW}").startswith("401")
    assert decide(auth.credentials, f"Bearer {OTHER}", "dashboard-read") == "viewer"  # IG_AUTH_TOKENS stay
    path.unlink()
    assert decide(auth.credentials, f"Bearer {NEW}").startswith("401")


def test_only_digests_are_kept(two: GatewaySettings) -> None:
    tokens = tokens_from_settings(GatewaySettings(auth_tokens=json.dumps(
        [{"name": "plain", "scopes": ["intake"], "token": OLD}])))
    assert OLD.encode() not in repr(tokens).encode() and tokens[0].digests == (hashlib.sha256(OLD.encode()).digest(),)


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "ris", "scopes": ["intake"]}, "needs sha256"),
    ({"name": "ris", "scopes": ["admin"], "token": OLD}, "needs scopes"),
    ({"name": "ris", "scopes": [], "token": OLD}, "needs scopes"),
    ({"name": "r is", "scopes": ["intake"], "token": OLD}, "name is 1-64"),
    ({"name": "ris", "scopes": ["intake"], "sha256": OLD}, "64 hex digits"),
    ({"name": "ris", "scopes": ["intake"], "token": OLD, "expires": "never"}, "only the keys"),
])
def test_a_bad_entry_is_named_without_its_value(entry: dict[str, object], message: str) -> None:
    with pytest.raises(AuthConfigError, match=message) as refused:
        tokens_from_settings(GatewaySettings(auth_tokens=json.dumps([entry])))
    assert "IG_AUTH_TOKENS token 1" in str(refused.value) and OLD not in str(refused.value)


def test_names_are_unique_across_every_source(tmp_path: Path) -> None:
    path = tokens_file(tmp_path / "tokens.toml", ("default", ["intake"], [sha(OLD)]))
    with pytest.raises(AuthConfigError, match="unique"):
        tokens_from_settings(GatewaySettings(auth_tokens_file=path, fhir_bearer_token=NEW))
    with pytest.raises(AuthConfigError, match="not JSON"):
        tokens_from_settings(GatewaySettings(auth_tokens="sentinel"))
    (tmp_path / "bad.toml").write_text("token = 'x'\n", encoding="utf-8")
    with pytest.raises(AuthConfigError, match="only \\[\\[token\\]\\] tables"):
        tokens_from_settings(GatewaySettings(auth_tokens_file=tmp_path / "bad.toml"))


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                                ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                                ("::", False), ("", False), ("10.0.0.5", False),
                                                ("gateway.hospital.local", False)])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_what_stops_serve(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    exposed = GatewaySettings(http_host="0.0.0.0")
    assert "IG_AUTH_TOKENS_FILE" in (startup_problem(exposed) or "")
    assert startup_problem(GatewaySettings(http_host="0.0.0.0", dashboard_open=True)) is not None
    assert startup_problem(GatewaySettings()) is None  # loopback: starts, and refuses every protected call
    assert startup_problem(GatewaySettings(http_host="0.0.0.0", fhir_bearer_token=OLD)) is None
    pem = tmp_path / "x.pem"
    assert startup_problem(GatewaySettings(http_host="0.0.0.0", http_tls_cert=pem, http_tls_key=pem,
                                           http_tls_client_ca=pem)) is None  # mutual TLS: only CA-signed peers
    assert "IG_HTTP_TLS_KEY" in (startup_problem(GatewaySettings(http_tls_cert=pem)) or "")
    assert "IG_HTTP_TLS_CERT" in (startup_problem(GatewaySettings(http_tls_client_ca=pem)) or "")
    assert "IG_AUTH_TOKENS_FILE" in (startup_problem(GatewaySettings(auth_tokens_file=tmp_path / "none")) or "")


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in AUTH_ENV}
    # An unreachable broker: had serve gone on, it would fail later with another message (or hang until the timeout).
    return subprocess.run([sys.executable, "-m", "cli", "serve", "--kafka-bootstrap", "127.0.0.1:9", *args],
                          cwd=REPO, env=clean | (env or {}), capture_output=True, text=True, timeout=60)


def test_serve_refuses_a_non_loopback_address_without_credentials(tmp_path: Path) -> None:
    done = _serve("--http-host", "0.0.0.0", "--http-port", "0", "--mllp-port", "0")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    refusal = json.loads(line)
    assert refusal["error"] == "refused" and "IG_HTTP_HOST=0.0.0.0" in refusal["reason"]
    assert "IG_AUTH_TOKENS_FILE" in refusal["reason"]
    broken = tokens_file(tmp_path / "tokens.toml", ("ris", ["intake", "admin"], [sha(OLD)]))
    done = _serve(env={"IG_AUTH_TOKENS_FILE": str(broken)})
    assert done.returncode == 2 and "token 1" in done.stderr and "needs scopes" in done.stderr
    assert sha(OLD) not in done.stderr


def test_the_dashboard_names_the_gateway_scopes() -> None:
    assert set(web.SCOPES) <= SCOPES
