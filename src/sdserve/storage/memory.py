"""In-memory blob store: the fake for tests and single-process demos (nothing survives
the process, and worker processes do not share it)."""

from __future__ import annotations

import threading

from sdserve.storage.base import blob_key, tenant_prefix


class MemoryBlobStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}  # by blob_key
        self._lock = threading.Lock()

    def put(self, image_id: str, data: bytes, tenant: str | None = None) -> None:
        key = blob_key(image_id, tenant)
        frozen = bytes(data)  # a caller's bytearray must not change what we store
        with self._lock:
            self._blobs[key] = frozen

    def get(self, image_id: str, tenant: str | None = None) -> bytes | None:
        key = blob_key(image_id, tenant)
        with self._lock:
            return self._blobs.get(key)

    def delete(self, image_id: str, tenant: str | None = None) -> bool:
        key = blob_key(image_id, tenant)
        with self._lock:
            return self._blobs.pop(key, None) is not None

    def delete_tenant(self, tenant: str) -> int:
        prefix = tenant_prefix(tenant)
        with self._lock:
            keys = [k for k in self._blobs if k.startswith(prefix)]
            for k in keys:
                del self._blobs[k]
        return len(keys)

    def exists(self, image_id: str, tenant: str | None = None) -> bool:
        key = blob_key(image_id, tenant)
        with self._lock:
            return key in self._blobs

    def url(self, image_id: str, ttl_seconds: int, tenant: str | None = None) -> str | None:
        blob_key(image_id, tenant)
        return None  # served by the API
