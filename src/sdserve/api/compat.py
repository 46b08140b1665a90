"""The compatibility facades the app mounts (OpenAI, AUTOMATIC1111)."""

from __future__ import annotations

from fastapi import APIRouter

# Routes that take input images get the upload body limit (max_upload_bytes).
COMPAT_UPLOAD_PATHS = frozenset(
    {
        "/v1/images/edits",
        "/v1/images/variations",
        "/sdapi/v1/img2img",
        "/sdapi/v1/extra-single-image",
    }
)


def compat_routers() -> list[APIRouter]:
    from sdserve.api.facade_a1111 import router as a1111_router
    from sdserve.api.facade_openai import router as openai_router

    return [openai_router, a1111_router]
