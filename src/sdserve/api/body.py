"""Request bodies of the routes that take input images: JSON or multipart.

JSON is validated strictly (JSON types as sent: ``"64"`` is not a number, ``true`` is
not a step count); multipart form fields are text by nature, so they are parsed as
their declared types. File parts (``image``, ``mask``) carry raw image bytes.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from sdserve.api.errors import problems_from_pydantic
from sdserve.api.submit import Uploads
from sdserve.domain.errors import InvalidRequest, SdserveError

M = TypeVar("M", bound=BaseModel)

_MAX_FORM_FIELDS = 64
_MAX_FORM_FILES = 4


class UnsupportedMediaType(SdserveError):
    type = "unsupported_media_type"


def invalid(exc: ValidationError) -> InvalidRequest:
    return InvalidRequest(problems_from_pydantic(list(exc.errors())))  # type: ignore[arg-type]


async def parse(request: Request, model: type[M], max_file_bytes: int) -> tuple[M, Uploads]:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _multipart(request, model, max_file_bytes)
    if ctype not in ("application/json", ""):
        raise UnsupportedMediaType(
            f"content-type {ctype!r} is not accepted; send application/json or multipart/form-data"
        )
    raw = await request.body()
    try:
        return model.model_validate_json(raw, strict=True), Uploads()
    except ValidationError as exc:
        raise invalid(exc) from exc


async def _multipart(request: Request, model: type[M], max_file_bytes: int) -> tuple[M, Uploads]:
    try:
        form = await request.form(
            max_files=_MAX_FORM_FILES,
            max_fields=_MAX_FORM_FIELDS,
            max_part_size=max_file_bytes,
        )
    except Exception as exc:  # starlette raises its own errors for broken multipart
        raise InvalidRequest.single("body", f"malformed multipart body: {exc}") from exc
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[key] = await value.read()
            else:
                fields[key] = _form_value(value)
    finally:
        await form.close()
    try:
        return model.model_validate(fields), Uploads(files)
    except ValidationError as exc:
        raise invalid(exc) from exc


def _form_value(text: str) -> Any:
    """Form fields are text; nested values (lists, objects) arrive as JSON text."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except ValueError:
            return text
    return text
