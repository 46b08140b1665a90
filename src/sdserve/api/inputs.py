"""Editing inputs at submit: decoded strictly, stored as blobs, referenced by id.

A job row holds blob ids, never image bytes (rows are read on every poll). An upload
is decoded once here (format, pixel limit, orientation, alpha, mode: sdserve.imaging),
stored as a canonical PNG under a fresh unguessable id, and the worker reads that PNG
back. An input may instead name an image the service already has (an earlier output
or input) by its id, so a client never uploads what the service holds.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from PIL import Image
from starlette.concurrency import run_in_threadpool

from sdserve.api.services import Services
from sdserve.domain.errors import InvalidRequest
from sdserve.imaging import (
    ImageLimits,
    decode_base64,
    decode_image,
    decode_mask,
    encode_png,
    load_stored,
)
from sdserve.storage.base import valid_image_id


@dataclass(frozen=True)
class RawInput:
    """What the client sent for one input: bytes (multipart or base64) or an id."""

    field: str
    data: bytes | None = None
    image_id: str | None = None


def new_input_id() -> str:
    return uuid.uuid4().hex + ".png"


def raw_input(
    field: str, text: str | None, image_id: str | None, upload: bytes | None, max_bytes: int
) -> RawInput | None:
    """One input as sent: a multipart file part, base64 text, or an id."""
    if upload is not None:
        return RawInput(field, data=upload)
    if text is not None:
        return RawInput(field, data=decode_base64(text, field=field, max_bytes=max_bytes))
    if image_id is not None:
        return RawInput(f"{field}_id", image_id=image_id)
    return None


@dataclass
class DecodedInput:
    """An input checked and decoded; ``id`` is set once it has a blob id."""

    field: str
    image: Image.Image
    id: str
    new: bool  # an upload still to be stored (False: it names a stored image)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


async def decode(
    services: Services,
    raw: RawInput,
    *,
    tenant: str | None,
    mask_size: tuple[int, int] | None = None,
) -> DecodedInput:
    """Decode and check one input of a request by ``tenant`` (``mask_size``: this is a
    mask for an image of that size); nothing is stored yet, so a request refused later
    leaves no blob behind. An id names one of ``tenant``'s own images: another
    tenant's id is "no stored image", exactly like an id that never existed."""
    return await run_in_threadpool(_decode_sync, services, raw, tenant, mask_size)


def _decode_sync(
    services: Services, raw: RawInput, tenant: str | None, mask_size: tuple[int, int] | None
) -> DecodedInput:
    settings = services.settings
    limits = ImageLimits(max_bytes=settings.max_input_bytes, max_pixels=settings.max_input_pixels)
    if raw.image_id is not None:
        image = _existing(services, raw.image_id, raw.field, tenant)
        if mask_size is not None:
            image = image.convert("L")
        decoded = DecodedInput(raw.field, image, raw.image_id, new=False)
    else:
        assert raw.data is not None
        if mask_size is not None:
            image = decode_mask(raw.data, field=raw.field, limits=limits, image_size=mask_size)
        else:
            image = decode_image(raw.data, field=raw.field, limits=limits)
        decoded = DecodedInput(raw.field, image, new_input_id(), new=True)
    if mask_size is not None and decoded.size != mask_size:
        (mw, mh), (iw, ih) = decoded.size, mask_size
        raise InvalidRequest.single(
            raw.field, f"mask is {mw}x{mh} but its image is {iw}x{ih}; they must match"
        )
    return decoded


async def persist(services: Services, inputs: list[DecodedInput], tenant: str | None) -> None:
    """Store the uploads among ``inputs`` (canonical PNG) under their ids, as
    ``tenant``'s images."""
    new = [d for d in inputs if d.new]
    if new:
        await run_in_threadpool(_persist_sync, services, new, tenant)


def _persist_sync(services: Services, inputs: list[DecodedInput], tenant: str | None) -> None:
    for d in inputs:
        services.blobs.put(d.id, encode_png(d.image), tenant=tenant)


def _existing(services: Services, image_id: str, field: str, tenant: str | None) -> Image.Image:
    data = services.blobs.get(image_id, tenant=tenant) if valid_image_id(image_id) else None
    if data is None:
        raise InvalidRequest.single(field, f"no stored image with id {image_id[:64]!r}")
    return load_stored(data)
