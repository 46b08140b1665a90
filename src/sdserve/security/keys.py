"""API keys: the presented form, the stored record, and how one is checked.

A key is ``sk-<id>-<secret>``: ``id`` (16 hex) names the record, ``secret`` (43
url-safe characters, 256 random bits) proves possession. Only SHA-256 of
``<id>:<secret>`` is stored. A salted or slow hash buys nothing here: the secret is
random, not a password, so there is no dictionary to try and 2**256 secrets to search.
A plain hash also survives a change of SDSERVE_SECRET_KEY (an HMAC with it would
invalidate every key at once). Hashes are compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

PREFIX = "sk-"
_ID_RE = re.compile(r"[0-9a-f]{16}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_PRESENTED_LENGTH = 128  # anything longer is not a key: refuse before any work
# Compared against when the id is unknown, so a miss costs what a wrong secret costs.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


class Role(StrEnum):
    """What a key may do; each role includes the ones below it."""

    reader = "reader"  # read its tenant's jobs, workflows, images, models
    user = "user"  # and submit and cancel
    admin = "admin"  # and the admin API (keys, tenants, every tenant's jobs)

    @property
    def rank(self) -> int:
        return _RANK[self]

    def includes(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANK = {Role.reader: 0, Role.user: 1, Role.admin: 2}


class KeyState(StrEnum):
    active = "active"
    expired = "expired"
    revoked = "revoked"


class ApiKey(BaseModel):
    """The stored record of one key. It never holds the secret, only its hash."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str
    role: Role
    name: str = ""
    secret_hash: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    rotated_to: str | None = None  # the key that replaced this one (rotation)
    # The prompt policy's threshold for this key's requests (None: its tenant's).
    prompt_threshold: float | None = None

    def state(self, now: float) -> KeyState:
        if self.revoked_at is not None and self.revoked_at <= now:
            return KeyState.revoked
        if self.expires_at is not None and self.expires_at <= now:
            return KeyState.expired
        return KeyState.active

    def public(self, now: float) -> dict[str, Any]:
        """What the admin API and CLI show: everything but the hash."""
        out = self.model_dump(mode="json", exclude={"secret_hash"})
        out["object"] = "api_key"
        out["state"] = self.state(now).value
        return out


@dataclass(frozen=True)
class IssuedKey:
    """A key just created: the record and the one and only copy of the full key."""

    record: ApiKey
    key: str


def new_key_material() -> tuple[str, str]:
    """(id, secret) from the OS's CSPRNG."""
    return secrets.token_hex(8), secrets.token_urlsafe(32)


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}{key_id}-{secret}"


def parse_key(presented: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None (no detail: it is not a key)."""
    if len(presented) > MAX_PRESENTED_LENGTH or not presented.startswith(PREFIX):
        return None
    parts = presented[len(PREFIX) :].split("-", 1)
    if len(parts) != 2:
        return None
    key_id, secret = parts
    if not _ID_RE.fullmatch(key_id) or not _SECRET_RE.fullmatch(secret):
        return None
    return key_id, secret


def hash_secret(key_id: str, secret: str) -> str:
    return hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


def matches(record: ApiKey | None, key_id: str, secret: str) -> bool:
    """Constant-time check of ``secret`` against the record (a missing record costs
    the same comparison)."""
    stored = record.secret_hash if record is not None else _DUMMY_HASH
    ok = hmac.compare_digest(stored, hash_secret(key_id, secret))
    return ok and record is not None


def valid_key_id(key_id: str) -> bool:
    return bool(_ID_RE.fullmatch(key_id))
