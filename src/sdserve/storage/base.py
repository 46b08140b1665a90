"""BlobStore: where finished images live, addressed by opaque ids (never paths)."""

from __future__ import annotations

import re
from typing import Protocol

from sdserve.domain.errors import InvalidRequest, SdserveError

# Image ids are produced by domain.jobs.image_id: 32 hex chars and a format suffix.
IMAGE_ID_RE = re.compile(r"[0-9a-f]{32}\.(png|jpeg|webp)")

# SigV4 pre-signed URLs live at most 7 days.
MAX_URL_TTL_SECONDS = 7 * 24 * 3600


def valid_image_id(image_id: str) -> bool:
    # fullmatch: "$" would also accept a trailing newline.
    return bool(IMAGE_ID_RE.fullmatch(image_id))


def checked_image_id(image_id: str) -> str:
    """The id itself, or InvalidRequest: no store ever turns a bad id into a key/path."""
    if not isinstance(image_id, str) or not valid_image_id(image_id):
        raise InvalidRequest.single("image_id", "not a valid image id")
    return image_id


def media_type(image_id: str) -> str:
    return "image/" + image_id.rsplit(".", 1)[1]


class StorageUnavailable(SdserveError):
    """The blob store cannot be reached or is misconfigured (missing bucket, no access,
    missing extra). Retryable for clients; operators read the message."""

    type = "storage_unavailable"
    status = 503
    retryable = True


class BlobStore(Protocol):
    """Every method refuses an invalid id with InvalidRequest before touching storage,
    and raises StorageUnavailable when the backing service fails."""

    def put(self, image_id: str, data: bytes) -> None:
        """Write atomically (a reader sees the old bytes or the new, never a part);
        writing the same id twice replaces it (idempotent)."""
        ...

    def get(self, image_id: str) -> bytes | None:
        """The bytes, or None when no such image is stored."""
        ...

    def delete(self, image_id: str) -> bool:
        """Remove it; True if it was there. Deleting a missing id is not an error."""
        ...

    def exists(self, image_id: str) -> bool: ...

    def url(self, image_id: str, ttl_seconds: int) -> str | None:
        """A URL a client can GET the image from directly for ``ttl_seconds``, or None
        when this store is only served through the API (``/v1/images/{id}``). Signing
        does not check that the image exists."""
        ...
