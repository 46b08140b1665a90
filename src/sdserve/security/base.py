"""The KeyStore interface: API keys and per-tenant settings, beside the job store.

Every backend (memory, sqlite, redis) implements this Protocol and passes the one
contract suite in tests/contract/test_keystore_contract.py. The rules (what create,
revoke and rotate do; what counts as a valid key) live once in ``KeyStoreBase``;
a backend only loads and saves records, several of them atomically.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from sdserve.domain.errors import Conflict, InvalidRequest, NotFound
from sdserve.domain.tenants import checked_tenant
from sdserve.security.keys import (
    ApiKey,
    IssuedKey,
    KeyState,
    Role,
    format_key,
    hash_secret,
    matches,
    new_key_material,
    parse_key,
    valid_key_id,
)

MAX_KEY_NAME = 100
MAX_OVERLAP_SECONDS = 30 * 24 * 3600


class Tenant(BaseModel):
    """Per-tenant settings. ``webhook_secret`` is sealed (security/sealing.py): the
    store never holds it in clear, and cannot open it without SDSERVE_SECRET_KEY."""

    model_config = ConfigDict(frozen=True)

    name: str
    webhook_secret: str | None = None
    updated_at: float = 0.0
    # The prompt policy's threshold for this tenant (None: SDSERVE_PROMPT_POLICY_THRESHOLD).
    prompt_threshold: float | None = None

    def public(self, key_count: int = 0) -> dict[str, Any]:
        return {
            "object": "tenant",
            "name": self.name,
            "keys": key_count,
            "webhook_secret": self.webhook_secret is not None,
            "updated_at": self.updated_at,
        }


class KeyStore(Protocol):
    def create(
        self,
        tenant: str,
        role: Role,
        *,
        name: str = "",
        expires_at: float | None = None,
        now: float | None = None,
        material: tuple[str, str] | None = None,
    ) -> IssuedKey:
        """A new key; the full key exists only in the returned value. ``material``:
        register this (id, secret) instead of fresh random ones (the start-up admin key,
        which is written to its file first)."""
        ...

    def identify(self, presented: str) -> ApiKey | None:
        """The record whose secret the presented key carries, in any state; None for
        anything else (malformed, unknown id, wrong secret)."""
        ...

    def authenticate(self, presented: str, now: float | None = None) -> ApiKey | None:
        """As ``identify``, but only an active key (not revoked, not expired)."""
        ...

    def get(self, key_id: str) -> ApiKey | None: ...

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (or one tenant's), oldest first, in every state."""
        ...

    def revoke(self, key_id: str, now: float | None = None) -> ApiKey:
        """Unusable from ``now`` on. NotFound if absent; Conflict for the last active
        admin key (the deployment would lock itself out)."""
        ...

    def rotate(
        self,
        key_id: str,
        overlap_seconds: float,
        *,
        expires_at: float | None = None,
        now: float | None = None,
    ) -> IssuedKey:
        """A new key of the same tenant, role and name; the old one keeps working for
        ``overlap_seconds`` more (never longer than it already would), then 401s."""
        ...

    def has_keys(self) -> bool: ...

    def tenant(self, name: str) -> Tenant | None: ...

    def tenants(self) -> list[str]:
        """Every tenant that has keys or settings, sorted."""
        ...

    def set_webhook_secret(self, tenant: str, sealed: str | None, now: float | None = None) -> None:
        """Store a tenant's sealed webhook secret (None: back to the global secret)."""
        ...

    def set_prompt_threshold(
        self, tenant: str, threshold: float | None, now: float | None = None
    ) -> None:
        """Store a tenant's prompt-policy threshold (None: back to the deployment's)."""
        ...

    def set_key_prompt_threshold(self, key_id: str, threshold: float | None) -> ApiKey:
        """One key's prompt-policy threshold (None: its tenant's). NotFound."""
        ...

    def close(self) -> None: ...


class KeyStoreBase(ABC):
    """The rules of the KeyStore contract over a backend's load/save primitives."""

    # --- what a backend provides ---
    @abstractmethod
    def _load(self, key_id: str) -> ApiKey | None: ...

    @abstractmethod
    def _save(self, records: Sequence[ApiKey]) -> None:
        """Insert or replace all of ``records`` atomically."""

    @abstractmethod
    def _records(self, tenant: str | None) -> list[ApiKey]: ...

    @abstractmethod
    def _load_tenant(self, name: str) -> Tenant | None: ...

    @abstractmethod
    def _save_tenant(self, tenant: Tenant) -> None: ...

    @abstractmethod
    def _tenant_names(self) -> set[str]:
        """Names of the tenants with a settings record."""

    @abstractmethod
    def close(self) -> None: ...

    # --- the contract ---
    def create(
        self,
        tenant: str,
        role: Role,
        *,
        name: str = "",
        expires_at: float | None = None,
        now: float | None = None,
        material: tuple[str, str] | None = None,
    ) -> IssuedKey:
        ts = _now(now)
        checked_tenant(tenant)
        role = Role(role)
        if len(name) > MAX_KEY_NAME:
            raise InvalidRequest.single("name", f"at most {MAX_KEY_NAME} characters", MAX_KEY_NAME)
        if expires_at is not None and expires_at <= ts:
            raise InvalidRequest.single("expires_at", "must be in the future")
        key_id, secret = material or new_key_material()
        if material is not None and parse_key(format_key(key_id, secret)) is None:
            raise InvalidRequest.single("key", "not a well-formed sk-<id>-<secret> key")
        record = ApiKey(
            id=key_id,
            tenant=tenant,
            role=role,
            name=name,
            secret_hash=hash_secret(key_id, secret),
            created_at=ts,
            expires_at=expires_at,
        )
        self._save([record])
        return IssuedKey(record, format_key(key_id, secret))

    def identify(self, presented: str) -> ApiKey | None:
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        record = self._load(key_id)
        return record if matches(record, key_id, secret) else None

    def authenticate(self, presented: str, now: float | None = None) -> ApiKey | None:
        record = self.identify(presented)
        if record is None or record.state(_now(now)) is not KeyState.active:
            return None
        return record

    def get(self, key_id: str) -> ApiKey | None:
        return self._load(key_id) if valid_key_id(key_id) else None

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        if tenant is not None:
            checked_tenant(tenant)
        return sorted(self._records(tenant), key=lambda r: (r.created_at, r.id))

    def _existing(self, key_id: str) -> ApiKey:
        record = self.get(key_id)
        if record is None:
            raise NotFound(f"no API key with id {key_id[:64]!r}")
        return record

    def revoke(self, key_id: str, now: float | None = None) -> ApiKey:
        ts = _now(now)
        record = self._existing(key_id)
        if record.state(ts) is KeyState.revoked:
            return record
        if record.role is Role.admin and record.state(ts) is KeyState.active:
            others = [
                r
                for r in self._records(None)
                if r.role is Role.admin and r.id != key_id and r.state(ts) is KeyState.active
            ]
            if not others:
                raise Conflict(
                    f"key {key_id} is the last active admin key; create another admin key "
                    "before revoking it"
                )
        revoked = record.model_copy(update={"revoked_at": ts})
        self._save([revoked])
        return revoked

    def rotate(
        self,
        key_id: str,
        overlap_seconds: float,
        *,
        expires_at: float | None = None,
        now: float | None = None,
    ) -> IssuedKey:
        ts = _now(now)
        if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
            raise InvalidRequest.single(
                "overlap_seconds",
                f"must be between 0 and {MAX_OVERLAP_SECONDS} (30 days)",
                MAX_OVERLAP_SECONDS,
            )
        old = self._existing(key_id)
        state = old.state(ts)
        if state is not KeyState.active:
            raise Conflict(f"key {key_id} is {state.value}; create a new key instead")
        if expires_at is not None and expires_at <= ts:
            raise InvalidRequest.single("expires_at", "must be in the future")
        new_id, secret = new_key_material()
        new = ApiKey(
            id=new_id,
            tenant=old.tenant,
            role=old.role,
            name=old.name,
            prompt_threshold=old.prompt_threshold,
            secret_hash=hash_secret(new_id, secret),
            created_at=ts,
            expires_at=expires_at,
        )
        ends = ts + overlap_seconds
        if old.expires_at is not None:
            ends = min(ends, old.expires_at)
        retired = old.model_copy(update={"expires_at": ends, "rotated_to": new_id})
        self._save([new, retired])
        return IssuedKey(new, format_key(new_id, secret))

    def has_keys(self) -> bool:
        return bool(self._records(None))

    def tenant(self, name: str) -> Tenant | None:
        return self._load_tenant(checked_tenant(name))

    def tenants(self) -> list[str]:
        return sorted(self._tenant_names() | {r.tenant for r in self._records(None)})

    def set_webhook_secret(self, tenant: str, sealed: str | None, now: float | None = None) -> None:
        self._update_tenant(tenant, now, webhook_secret=sealed)

    def set_prompt_threshold(
        self, tenant: str, threshold: float | None, now: float | None = None
    ) -> None:
        self._update_tenant(tenant, now, prompt_threshold=threshold)

    def set_key_prompt_threshold(self, key_id: str, threshold: float | None) -> ApiKey:
        record = self._load(key_id)
        if record is None:
            raise NotFound(f"no key with id {key_id[:64]!r}")
        changed = record.model_copy(update={"prompt_threshold": threshold})
        self._save([changed])
        return changed

    def _update_tenant(self, tenant: str, now: float | None, **changes: object) -> None:
        """One setting changed, the others kept."""
        old = self._load_tenant(checked_tenant(tenant)) or Tenant(name=tenant)
        self._save_tenant(old.model_copy(update={**changes, "updated_at": _now(now)}))


def _now(now: float | None) -> float:
    return time.time() if now is None else now
