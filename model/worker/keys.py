"""The model worker's API keys (RFC 6750 bearer tokens): read from a file and/or the environment, sent, checked.

Input: ``api_key_file`` (one key a line: two during a rotation) and ``api_key`` of ``WorkerSettings``/``ModelSettings``;
each request's ``Authorization`` header. Output: the client's header (``bearer``), the front's ``WorkerKeys.check``.
The front keeps SHA-256 digests only; no key is ever logged or echoed. Failure modes: ``KeyConfigError`` naming the
variable (and line), never a key; a file that turns unusable while serving drops its keys (fail closed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path

import structlog
from pydantic import SecretStr

from model.settings import ModelSettings
from schemas.network import is_loopback

log = structlog.get_logger(__name__)

WORKER_VARS = ("IG_WORKER_API_KEY_FILE", "IG_WORKER_API_KEY")
CLIENT_VARS = ("IG_MODEL_API_KEY_FILE", "IG_MODEL_API_KEY")
MIN_LENGTH = 16
NO_KEY = SecretStr("")
# RFC 6750 §2.1: b64token, what an Authorization: Bearer header carries as it is.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class KeyConfigError(ValueError):
    """Keys that cannot be used, or none where one is required; the message names the variable, never a key."""


def _valid(key: str, where: str) -> str:
    if not _B64TOKEN.fullmatch(key):
        raise KeyConfigError(f"{where}: a key is letters, digits and -._~+/ with '=' only at the end "
                             "(RFC 6750 §2.1 b64token)")
    if len(key) < MIN_LENGTH:
        raise KeyConfigError(f"{where}: a key has at least {MIN_LENGTH} characters (e.g. `openssl rand -hex 32`)")
    return key


def read_keys(path: Path | None, key: SecretStr, names: tuple[str, str]) -> list[str]:
    """The file's keys (one a line; blank lines and ``#`` comments skipped), then ``key``; ``names``: the two
    variables, for the messages. A file that is set but holds no key is an error, not "no authentication"."""
    keys: list[str] = []
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyConfigError(f"{names[0]} {path}: cannot be read ({type(exc).__name__})") from None
        lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
        found = [(n, line) for n, line in lines if line and not line.startswith("#")]
        if not found:
            raise KeyConfigError(f"{names[0]} {path}: holds no key (one a line)")
        keys += [_valid(line, f"{names[0]} {path} line {n}") for n, line in found]
    if value := key.get_secret_value().strip():
        keys.append(_valid(value, names[1]))
    return keys


def client_key(settings: ModelSettings) -> str:
    """The key a client sends: the first of ``IG_MODEL_API_KEY_FILE``, else ``IG_MODEL_API_KEY``; "" for none."""
    keys = read_keys(settings.api_key_file, settings.api_key, CLIENT_VARS)
    return keys[0] if keys else ""


def bearer(key: str) -> dict[str, str]:
    """The request header that carries ``key`` (RFC 6750 §2.1); none without a key."""
    return {"Authorization": f"Bearer {key}"} if key else {}




class WorkerKeys:
    """The keys the front accepts. The file is re-read when its content changes (checked at most every
    ``recheck_s``), so a key is rotated without a restart: add the new line, move the clients, remove the old."""

    def __init__(self, path: Path | None = None, key: SecretStr = NO_KEY, *, recheck_s: float = 1.0):
        self.path, self._key, self._recheck_s = path, key, recheck_s
        self.configured = path is not None or bool(key.get_secret_value().strip())
        self._digests = self._load()  # unusable at start: KeyConfigError, the worker does not start
        self._seen, self._checked = self._file_digest(), time.monotonic()

    def _load(self, *, with_file: bool = True) -> tuple[bytes, ...]:
        keys = read_keys(self.path if with_file else None, self._key, WORKER_VARS)
        return tuple(hashlib.sha256(k.encode()).digest() for k in keys)

    def _file_digest(self) -> bytes | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).digest() if self.path else None
        except OSError:
            return b""

    def _current(self) -> tuple[bytes, ...]:
        if self.path is None or time.monotonic() - self._checked < self._recheck_s:
            return self._digests
        self._checked = time.monotonic()
        if (seen := self._file_digest()) != self._seen:
            self._seen = seen
            try:
                self._digests = self._load()
                log.info("worker.api_keys_reloaded", keys=len(self._digests))
            except KeyConfigError as exc:  # fail closed: the file's keys are gone until it is usable again
                self._digests = self._load(with_file=False)
                log.error("worker.api_keys_file_invalid", reason=str(exc), keys=len(self._digests))
        return self._digests

    def check(self, authorization: str) -> str | None:
        """None when the request may pass; else why not: ``missing`` or ``invalid_token`` (RFC 6750 §3.1)."""
        if not self.configured:
            return None
        scheme, _, given = authorization.partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:  # RFC 9110 §11.1: the auth-scheme is case-insensitive
            return "missing"
        presented, found = hashlib.sha256(given.encode()).digest(), False
        for known in self._current():  # every digest compared, each in constant time: no early answer to time
            found |= hmac.compare_digest(presented, known)
        return None if found else "invalid_token"


def front_keys(host: str, path: Path | None, key: SecretStr) -> WorkerKeys:
    """The front's keys; ``KeyConfigError`` when they cannot be used, or when ``host`` is reachable from other
    machines and there is no key (fail closed: report text crosses this front). Loopback without a key: open."""
    keys = WorkerKeys(path, key)
    if not keys.configured and not is_loopback(host):
        raise KeyConfigError(
            f"the worker front would listen on {host} (IG_WORKER_HOST, --host), reachable from other machines, "
            f"without an API key: set {WORKER_VARS[0]} (--api-key-file) or {WORKER_VARS[1]}, or listen on 127.0.0.1")
    return keys
