"""Admin login sessions: HMAC-signed cookies, CSRF tokens derived from the session id.

The cookie carries `v1.<payload>.<signature>`; the payload (session id, tenant, key id, key hash,
expiry) is signed, not encrypted, and names no secret: the key hash cannot be used as an API key.
Each request re-reads the key, so revoking it (or taking its admin flag) ends its sessions.
The signing secret is `AdminConfig.secret`, or a random one kept in `<data_dir>/admin_secret`
(mode 0600), so sessions survive restarts. Logout revokes the session id in the record database
(its hash, until the session would have expired), so every node sharing the database honours it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from api.auth import authenticate, hash_key
from memsvc.ports import RecordStore

COOKIE = "memsvc_admin"
LOGIN_COOKIE = "memsvc_admin_login"  # pre-login nonce for the login form's CSRF token
COOKIE_PATH = "/admin"
LOGIN_NONCE_TTL_S = 3600


@dataclass(frozen=True)
class AdminSession:
    sid: str
    tenant: str
    key_id: str
    key_hash: str
    read_only: bool
    expires: int
    csrf: str

    @property
    def actor(self) -> str:
        return f"admin:{self.key_id}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_secret(path: Path) -> bytes:
    """Read the signing secret, creating it (0600, never overwritten) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text(encoding="ascii").strip()
    else:
        secret = secrets.token_hex(32)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret + "\n")
    if len(secret) < 32:
        raise RuntimeError(f"{path}: admin secret too short")
    return secret.encode()


class SessionManager:
    """Issues, verifies and revokes admin sessions."""

    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    # -- tokens ------------------------------------------------------------------------
    def _mac(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest())

    def csrf_for(self, sid: str) -> str:
        return self._mac("csrf", sid)

    def login_csrf(self, nonce: str) -> str:
        return self._mac("login", nonce)

    def check_login_csrf(self, nonce: str | None, token: str | None) -> bool:
        return bool(nonce and token) and hmac.compare_digest(self.login_csrf(nonce or ""), token or "")

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(24)

    # -- sessions ----------------------------------------------------------------------
    def issue(self, tenant: str, key_id: str, key_hash: str, read_only: bool) -> tuple[AdminSession, str]:
        """A new session (fresh id: no fixation) and its cookie value."""
        sid = secrets.token_urlsafe(24)
        expires = int(time.time()) + self.ttl_s
        payload = {"sid": sid, "t": tenant, "k": key_id, "h": key_hash, "ro": read_only, "exp": expires}
        body = "v1." + _b64(json.dumps(payload, separators=(",", ":")).encode())
        cookie = f"{body}.{self._mac('session', body)}"
        return AdminSession(sid, tenant, key_id, key_hash, read_only, expires, self.csrf_for(sid)), cookie

    def verify(self, cookie: str | None, records: RecordStore) -> AdminSession | None:
        """The session of a valid, unexpired, unrevoked cookie whose key is still an admin key."""
        if not cookie or cookie.count(".") != 2:
            return None
        body, _, sig = cookie.rpartition(".")
        if not hmac.compare_digest(self._mac("session", body), sig):
            return None
        try:
            data: dict[str, Any] = json.loads(_unb64(body.split(".", 1)[1]))
            sid, tenant, key_id, key_hash = str(data["sid"]), str(data["t"]), str(data["k"]), str(data["h"])
            expires = int(data["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires <= time.time() or records.session_revoked(_sid_hash(sid)):
            return None
        key = records.key_by_hash(key_hash)
        if key is None or not key.usable() or not key.admin or key.id != key_id or key.tenant != tenant:
            return None
        return AdminSession(sid, tenant, key_id, key_hash, key.read_only, expires, self.csrf_for(sid))

    def check_csrf(self, session: AdminSession, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(session.csrf, token or "")

    # -- logout ------------------------------------------------------------------------
    def revoke(self, session: AdminSession, records: RecordStore) -> None:
        records.revoke_session(_sid_hash(session.sid), datetime.fromtimestamp(session.expires, UTC))


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def login_key(records: RecordStore, plaintext: str) -> tuple[str, str, str, bool] | str:
    """(tenant, key id, key hash, read_only) for an admin key, else why it is refused."""
    principal = authenticate(records, plaintext.strip())
    if principal is None:
        return "That key is not valid."
    if not principal.admin:
        return "That key is not an admin key."
    return principal.tenant, principal.key_id, hash_key(plaintext.strip()), principal.read_only
