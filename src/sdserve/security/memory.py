"""In-memory KeyStore: the fake for tests (nothing survives the process)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from sdserve.security.base import KeyStoreBase, Tenant
from sdserve.security.keys import ApiKey


class MemoryKeyStore(KeyStoreBase):
    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}
        self._tenants: dict[str, Tenant] = {}
        self._lock = threading.Lock()

    def _load(self, key_id: str) -> ApiKey | None:
        with self._lock:
            return self._keys.get(key_id)

    def _save(self, records: Sequence[ApiKey]) -> None:
        with self._lock:
            for record in records:
                self._keys[record.id] = record

    def _records(self, tenant: str | None) -> list[ApiKey]:
        with self._lock:
            return [r for r in self._keys.values() if tenant is None or r.tenant == tenant]

    def _load_tenant(self, name: str) -> Tenant | None:
        with self._lock:
            return self._tenants.get(name)

    def _save_tenant(self, tenant: Tenant) -> None:
        with self._lock:
            self._tenants[tenant.name] = tenant

    def _tenant_names(self) -> set[str]:
        with self._lock:
            return set(self._tenants)

    def close(self) -> None:
        pass
