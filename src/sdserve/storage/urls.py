"""The image link a client should get: the API's route, or a pre-signed S3 URL."""

from __future__ import annotations

from sdserve.config import Settings
from sdserve.storage.base import BlobStore, checked_image_id


def api_image_url(settings: Settings, image_id: str) -> str:
    return f"{settings.public_base_url}/v1/images/{checked_image_id(image_id)}"


def image_url(
    settings: Settings, blobs: BlobStore, image_id: str, tenant: str | None = None
) -> str:
    """With SDSERVE_IMAGE_URLS=presigned and a store that signs URLs, an expiring direct
    URL (SDSERVE_PRESIGNED_URL_TTL_SECONDS); otherwise the API route. Settings refuse
    presigned with a store that cannot sign, so the fallback only serves api mode."""
    if settings.image_urls == "presigned":
        signed = blobs.url(image_id, settings.presigned_url_ttl_seconds, tenant)
        if signed is not None:
            return signed
    return api_image_url(settings, image_id)
