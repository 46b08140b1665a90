"""Redis KeyStore, for scale-out deployments whose job store is Redis.

Layout under the deployment's key prefix (SDSERVE_REDIS_PREFIX):
  <p>auth:key:<id>            one key record (JSON; the secret's hash, never the secret)
  <p>auth:keys                set of every key id
  <p>auth:tenant:<name>       one tenant's settings (JSON; a sealed webhook secret)
  <p>auth:tenants             set of tenant names with settings
Writes of several records go in one MULTI/EXEC, so a rotation never stores the new
key without retiring the old one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sdserve.domain.errors import SdserveError
from sdserve.security.base import KeyStoreBase, Tenant
from sdserve.security.keys import ApiKey

try:
    import redis
except ImportError as exc:  # pragma: no cover - exercised through the factory's message
    raise ImportError("the redis key store needs redis-py: pip install 'sdserve[redis]'") from exc

T = TypeVar("T")


class KeyStoreUnavailable(SdserveError):
    """The key store cannot be reached: requests cannot be authenticated now."""

    type = "backend_unavailable"
    retryable = True


class RedisKeyStore(KeyStoreBase):
    def __init__(self, client: Any, prefix: str = "sdserve:") -> None:
        self.client = client
        self.p = f"{prefix}auth:"

    @classmethod
    def from_url(cls, url: str, prefix: str = "sdserve:") -> RedisKeyStore:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        return cls(client, prefix)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            raise KeyStoreUnavailable(f"key store (Redis) unavailable: {exc}") from exc

    def _load(self, key_id: str) -> ApiKey | None:
        raw = self._call(lambda: self.client.get(f"{self.p}key:{key_id}"))
        return ApiKey.model_validate_json(raw) if raw else None

    def _save(self, records: Sequence[ApiKey]) -> None:
        def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            for record in records:
                pipe.set(f"{self.p}key:{record.id}", record.model_dump_json())
                pipe.sadd(f"{self.p}keys", record.id)
            pipe.execute()

        self._call(write)

    def _records(self, tenant: str | None) -> list[ApiKey]:
        def read() -> list[ApiKey]:
            ids = sorted(self.client.smembers(f"{self.p}keys"))
            if not ids:
                return []
            raws = self.client.mget([f"{self.p}key:{i}" for i in ids])
            records = [ApiKey.model_validate_json(r) for r in raws if r]
            return [r for r in records if tenant is None or r.tenant == tenant]

        return self._call(read)

    def _load_tenant(self, name: str) -> Tenant | None:
        raw = self._call(lambda: self.client.get(f"{self.p}tenant:{name}"))
        return Tenant.model_validate_json(raw) if raw else None

    def _save_tenant(self, tenant: Tenant) -> None:
        def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(f"{self.p}tenant:{tenant.name}", tenant.model_dump_json())
            pipe.sadd(f"{self.p}tenants", tenant.name)
            pipe.execute()

        self._call(write)

    def _tenant_names(self) -> set[str]:
        return set(self._call(lambda: self.client.smembers(f"{self.p}tenants")))

    def close(self) -> None:
        self.client.close()
