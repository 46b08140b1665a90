"""Pick the blob store from Settings (boto3 imports lazily: only the s3 backend needs it)."""

from __future__ import annotations

from sdserve.config import Settings
from sdserve.storage.base import BlobStore, StorageUnavailable


def build_blobs(settings: Settings) -> BlobStore:
    """A ready store. The s3 backend checks its bucket here (creating it when
    SDSERVE_S3_CREATE_BUCKET=true), so a misconfiguration stops the process at start.
    The memory backend lives in this process only: build it once and share it."""
    backend = settings.blob_backend
    if backend == "local":
        from sdserve.storage.local import LocalBlobStore

        return LocalBlobStore(settings.resolved_images_dir)
    if backend == "memory":
        from sdserve.storage.memory import MemoryBlobStore

        return MemoryBlobStore()
    if backend == "s3":
        return _build_s3(settings)
    raise StorageUnavailable(f"unknown blob backend {backend!r}")


def _build_s3(settings: Settings) -> BlobStore:
    try:
        from sdserve.storage.s3 import S3BlobStore, make_client
    except ImportError as exc:
        raise StorageUnavailable(
            "SDSERVE_BLOB_BACKEND=s3 needs boto3, which is not installed: pip install 'sdserve[s3]'"
        ) from exc
    client = make_client(settings.s3_endpoint_url, settings.s3_region)
    presign = None
    if settings.s3_public_endpoint_url:
        presign = make_client(settings.s3_public_endpoint_url, settings.s3_region)
    store = S3BlobStore(client, settings.s3_bucket, settings.s3_prefix, presign_client=presign)
    store.ensure_bucket(create=settings.s3_create_bucket)
    return store
