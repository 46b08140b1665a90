"""Base64 and ``data:`` URL inputs, with the size limit checked before decoding."""

from __future__ import annotations

import binascii
import re

from sdserve.imaging.decode import invalid
from sdserve.imaging.problems import ImageProblem

_WHITESPACE = str.maketrans("", "", " \t\r\n\f\v")
_URLSAFE = str.maketrans("-_", "+/")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=]")


def decode_base64(text: str, *, field: str, max_bytes: int) -> bytes:
    """Plain base64 or a ``data:<type>;base64,`` URL -> bytes.

    Lenient only where clients commonly differ and nothing is ambiguous: whitespace and
    line breaks are ignored, padding is optional, the URL-safe alphabet is accepted.
    The declared media type is ignored (the bytes decide the format).
    """
    try:
        return _decode(text, max_bytes)
    except ImageProblem as problem:
        raise invalid(field, problem) from problem


def _decode(text: str, max_bytes: int) -> bytes:
    payload = text.strip()
    if payload[:5].lower() == "data:":
        header, comma, payload = payload.partition(",")
        if not comma:
            raise ImageProblem("is a data URL with no ',' before the data")
        params = [part.strip().lower() for part in header[5:].split(";")[1:]]
        if "base64" not in params:
            raise ImageProblem(
                "is a data URL that is not base64-encoded; use data:image/png;base64,..."
            )
    payload = payload.translate(_WHITESPACE)
    if not payload:
        raise ImageProblem("is empty (no base64 data)")
    if "-" in payload or "_" in payload:
        if "+" in payload or "/" in payload:
            raise ImageProblem("is not valid base64: it mixes the standard and URL-safe alphabets")
        payload = payload.translate(_URLSAFE)
    data = payload.rstrip("=")
    size = len(data) * 3 // 4
    if size > max_bytes:
        raise ImageProblem(
            f"is {size} bytes after base64 decoding; the limit is {max_bytes} bytes", max_bytes
        )
    padding = len(payload) - len(data)
    try:
        if padding > 2 or (padding and len(payload) % 4):
            raise ValueError("wrong padding")
        return binascii.a2b_base64(data + "=" * (-len(data) % 4), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise _diagnose(data, padding, exc) from exc


def _diagnose(data: str, padding: int, exc: Exception) -> ImageProblem:
    """The most useful reason a strict decode failed (only computed on failure)."""
    bad = _NOT_BASE64.search(data)
    if bad is not None:
        return ImageProblem(
            f"is not valid base64: unexpected character {bad.group()!r} "
            f"at position {bad.start()} of the data"
        )
    if len(data) % 4 == 1:
        return ImageProblem("is not valid base64: the length is wrong (was it cut short?)")
    if padding:
        return ImageProblem("is not valid base64: wrong '=' padding")
    return ImageProblem(f"is not valid base64 ({exc})")
