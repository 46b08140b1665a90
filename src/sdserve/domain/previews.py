"""Where a running job's live preview is stored: one blob per job, in its owner's
tenant space, under an id only the server can compute (HMAC with the image-id key,
like ``jobs.image_id``), overwritten by each newer preview and deleted when the job's
batch ends. Never produced or served while an image checker is configured: a preview
is an unchecked image (docs/safety.md)."""

from __future__ import annotations

import hashlib
import hmac


def preview_id(job_id: str, key: bytes) -> str:
    """The blob id of ``job_id``'s preview (PNG)."""
    if not key:
        raise ValueError("preview ids need the server's image-id key")
    digest = hmac.new(key, f"preview:{job_id}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{digest}.png"


def previews_allowed(every_s: float, image_checker: str) -> bool:
    """Previews are on only when asked for and no image checker is configured."""
    return every_s > 0 and image_checker == "off"
