"""Pick the KeyStore beside the job store the deployment uses (redis imports lazily)."""

from __future__ import annotations

from sdserve.config import Settings
from sdserve.domain.errors import SdserveError
from sdserve.security.base import KeyStore


class KeyStoreUnconfigured(SdserveError):
    type = "configuration_error"


def build_keystore(settings: Settings) -> KeyStore:
    """SQLite: tables in the job store's file. Memory: this process only (tests).
    Redis: the deployment's Redis under SDSERVE_REDIS_PREFIX."""
    backend = settings.queue_backend
    if backend == "memory":
        from sdserve.security.memory import MemoryKeyStore

        return MemoryKeyStore()
    if backend == "sqlite":
        from sdserve.security.sqlite import SqliteKeyStore

        path = settings.resolved_database_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteKeyStore(path)
    if backend == "redis":
        try:
            from sdserve.security.redis import RedisKeyStore
        except ImportError as exc:
            raise KeyStoreUnconfigured(
                "SDSERVE_QUEUE_BACKEND=redis needs redis-py: pip install 'sdserve[redis]'"
            ) from exc
        return RedisKeyStore.from_url(settings.redis_url, settings.redis_prefix)
    raise KeyStoreUnconfigured(f"no key store for queue backend {backend!r}")
