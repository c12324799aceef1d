"""API keys: random secrets shown once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from memsvc.errors import InvalidInput
from memsvc.models import RESERVED_PREFIX, ApiKey
from memsvc.ports import RecordStore

KEY_PREFIX = "msk_"


def hash_key(plaintext: str) -> str:
    # Keys are 256-bit random secrets, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_key(
    records: RecordStore, tenant: str, *, admin: bool = False, read_only: bool = False,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key for `tenant`; returns the record and the plaintext (never stored)."""
    if not tenant.strip() or tenant.startswith(RESERVED_PREFIX):
        raise InvalidInput(f"tenant names must be non-empty and not start with {RESERVED_PREFIX!r} (reserved)")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(tenant=tenant, key_hash=hash_key(plaintext), prefix=plaintext[:12], admin=admin, read_only=read_only,
                 expires_at=expires_at)
    records.add_key(key)
    return key, plaintext


@dataclass(frozen=True)
class Principal:
    tenant: str
    key_id: str
    admin: bool
    read_only: bool

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


def authenticate(records: RecordStore, plaintext: str) -> Principal | None:
    if not plaintext.startswith(KEY_PREFIX):
        return None
    key = records.key_by_hash(hash_key(plaintext))
    if key is None or not key.usable():
        return None
    return Principal(tenant=key.tenant, key_id=key.id, admin=key.admin, read_only=key.read_only)
