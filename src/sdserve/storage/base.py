"""BlobStore: where finished images live, addressed by opaque ids (never paths).

Every blob belongs to a tenant (None: no tenant, i.e. auth off or a 0.1 data dir) and
is found only under it: the same id under another tenant is simply absent, so one
tenant can neither read nor overwrite another's images by knowing an id. Blobs with
no tenant keep the 0.1 layout (``<id[:2]>/<id>``); a tenant's live under
``tenants/<tenant>/<id[:2]>/<id>`` ("tenants" is not two hex digits, so it never
collides with the 0.1 folders).
"""

from __future__ import annotations

import re
from typing import Protocol

from sdserve.domain.errors import InvalidRequest, SdserveError
from sdserve.domain.tenants import checked_tenant

# Image ids are produced by domain.jobs.image_id: 32 hex chars and a format suffix.
IMAGE_ID_RE = re.compile(r"[0-9a-f]{32}\.(png|jpeg|webp)")

# SigV4 pre-signed URLs live at most 7 days.
MAX_URL_TTL_SECONDS = 7 * 24 * 3600
# Image responses (API and S3): private (no shared cache keeps a tenant's image) and
# short, so an image deleted on the server is soon gone from browsers too.
IMAGE_MAX_AGE_SECONDS = 300
IMAGE_CACHE_CONTROL = f"private, max-age={IMAGE_MAX_AGE_SECONDS}"


def valid_image_id(image_id: str) -> bool:
    # fullmatch: "$" would also accept a trailing newline.
    return bool(IMAGE_ID_RE.fullmatch(image_id))


def checked_image_id(image_id: str) -> str:
    """The id itself, or InvalidRequest: no store ever turns a bad id into a key/path."""
    if not isinstance(image_id, str) or not valid_image_id(image_id):
        raise InvalidRequest.single("image_id", "not a valid image id")
    return image_id


def blob_key(image_id: str, tenant: str | None) -> str:
    """The checked relative key of ``image_id`` under ``tenant`` ("/"-separated): every
    store derives its path or object key from this and nothing else."""
    image_id = checked_image_id(image_id)
    shard = f"{image_id[:2]}/{image_id}"
    if tenant is None:
        return shard
    return f"tenants/{checked_tenant(tenant)}/{shard}"


def tenant_prefix(tenant: str) -> str:
    """The key prefix every blob of ``tenant`` lives under (what ``delete_tenant`` drops)."""
    return f"tenants/{checked_tenant(tenant)}/"


def media_type(image_id: str) -> str:
    return "image/" + image_id.rsplit(".", 1)[1]


class StorageUnavailable(SdserveError):
    """The blob store cannot be reached or is misconfigured (missing bucket, no access,
    missing extra). Retryable for clients; operators read the message."""

    type = "storage_unavailable"
    retryable = True


class BlobStore(Protocol):
    """Every method refuses an invalid id or tenant name with InvalidRequest before
    touching storage, and raises StorageUnavailable when the backing service fails.
    ``tenant`` scopes every call: an id stored under one tenant does not exist under
    another (nor under None)."""

    def put(self, image_id: str, data: bytes, tenant: str | None = None) -> None:
        """Write atomically (a reader sees the old bytes or the new, never a part);
        writing the same id twice replaces it (idempotent)."""
        ...

    def get(self, image_id: str, tenant: str | None = None) -> bytes | None:
        """The bytes, or None when no such image is stored."""
        ...

    def delete(self, image_id: str, tenant: str | None = None) -> bool:
        """Remove it; True if it was there. Deleting a missing id is not an error."""
        ...

    def exists(self, image_id: str, tenant: str | None = None) -> bool: ...

    def delete_tenant(self, tenant: str) -> int:
        """Remove every blob stored under ``tenant`` (an erasure); returns how many."""
        ...

    def url(self, image_id: str, ttl_seconds: int, tenant: str | None = None) -> str | None:
        """A URL a client can GET the image from directly for ``ttl_seconds``, or None
        when this store is only served through the API (``/v1/images/{id}``). Signing
        does not check that the image exists."""
        ...
