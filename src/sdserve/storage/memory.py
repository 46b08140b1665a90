"""In-memory blob store: the fake for tests and single-process demos (nothing survives
the process, and worker processes do not share it)."""

from __future__ import annotations

import threading

from sdserve.storage.base import checked_image_id


class MemoryBlobStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, image_id: str, data: bytes) -> None:
        key = checked_image_id(image_id)
        frozen = bytes(data)  # a caller's bytearray must not change what we store
        with self._lock:
            self._blobs[key] = frozen

    def get(self, image_id: str) -> bytes | None:
        key = checked_image_id(image_id)
        with self._lock:
            return self._blobs.get(key)

    def delete(self, image_id: str) -> bool:
        key = checked_image_id(image_id)
        with self._lock:
            return self._blobs.pop(key, None) is not None

    def exists(self, image_id: str) -> bool:
        key = checked_image_id(image_id)
        with self._lock:
            return key in self._blobs

    def url(self, image_id: str, ttl_seconds: int) -> str | None:
        checked_image_id(image_id)
        return None  # served by the API
