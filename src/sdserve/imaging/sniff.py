"""Tell what a byte string is from its first bytes, never from a declared type.

Only PNG, JPEG and WebP are decoded; everything else is named as precisely as cheap
magic numbers allow, so a client that sent a GIF, an HTML error page or base64 text
where raw bytes were expected is told exactly that.
"""

from __future__ import annotations

from typing import Literal

from sdserve.imaging.problems import ImageProblem

Format = Literal["PNG", "JPEG", "WEBP"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
SUPPORTED_NAMES = ("PNG", "JPEG", "WebP")
ALLOWED = ["png", "jpeg", "webp"]  # the "limit" reported with a format error

# (magic, offset, name) for formats people actually send by mistake.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"II+\x00", 0, "TIFF"),
    (b"MM\x00+", 0, "TIFF"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"\x00\x00\x02\x00", 0, "CUR"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "JPEG 2000"),
    (b"\xff\x4f\xff\x51", 0, "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0, "JPEG XL"),
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"8BPS", 0, "PSD"),
    (b"%PDF", 0, "PDF"),
    (b"%!PS", 0, "PostScript"),
    (b"qoif", 0, "QOI"),
    (b"DDS ", 0, "DDS"),
    (b"icns", 0, "ICNS"),
    (b"v/1\x01", 0, "OpenEXR"),
    (b"\x1f\x8b", 0, "gzip"),
    (b"PK\x03\x04", 0, "ZIP"),
    (b"BM", 0, "BMP"),
)

# ISO-BMFF brands (the 4 bytes after "ftyp").
_FTYP_BRANDS = {
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"heim": "HEIC",
    b"heis": "HEIC",
    b"hevc": "HEIC",
    b"hevx": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
}

# base64 of the PNG, JPEG and WebP signatures: raw uploads that are really base64 text.
_BASE64_PREFIXES = (b"iVBORw0KGgo", b"/9j/", b"UklGR")


def sniff(data: bytes) -> Format:
    """The format of ``data``, or an ImageProblem saying what it is instead."""
    if not data:
        raise ImageProblem("is empty (0 bytes)")
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(JPEG_SIGNATURE):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if len(data) < 2:
        raise ImageProblem(f"is too short to be an image ({_bytes(len(data))})")
    for signature, name in ((PNG_SIGNATURE, "PNG"), (JPEG_SIGNATURE, "JPEG")):
        if len(data) < len(signature) and signature.startswith(data):
            raise ImageProblem(f"truncated {name}: only {_bytes(len(data))}")
    if len(data) < 12 and data[:4] == b"RIFF"[: len(data)]:
        raise ImageProblem(f"truncated WebP: only {_bytes(len(data))}")
    raise unsupported(describe(data))


def unsupported(name: str) -> ImageProblem:
    return ImageProblem(f"unsupported image format {name}; use PNG, JPEG or WebP", ALLOWED)


def describe(data: bytes) -> str:
    """A short name for data that is not PNG, JPEG or WebP."""
    for magic, offset, name in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if name == "BMP" and not _looks_like_bmp(data):
                continue
            return name
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return _FTYP_BRANDS.get(brand, f"ISO media ({_printable(brand)})")
    if data[:4] == b"RIFF":
        return f"RIFF/{_printable(data[8:12])}"
    if len(data) >= 3 and data[:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
        return "PNM"
    return _describe_text(data) or "(unrecognised data)"


def _describe_text(data: bytes) -> str | None:
    head = data[:2048]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multi-byte character cut at the window is fine
            return None
        text = head[: exc.start].decode("utf-8")
    text = text.lstrip("\ufeff \t\r\n")
    if any(ord(c) < 32 and c not in "\t\r\n" for c in text):
        return None
    lower = text[:2048].lower()
    if lower.startswith("data:"):
        return "(a data: URL; send the base64 in a JSON field or the raw bytes as a file)"
    if head.lstrip().startswith(_BASE64_PREFIXES):
        return "(base64 text; send the raw bytes, or the base64 in a JSON field)"
    if lower.startswith("<"):
        if "<svg" in lower:
            return "SVG"
        if lower.startswith(("<!doctype html", "<html")) or "<body" in lower:
            return "HTML"
        return "XML"
    if lower.startswith(("{", "[")):
        return "JSON"
    return "(text, not an image)"


def _looks_like_bmp(data: bytes) -> bool:
    # "BM" alone is too weak (text starting with "BM..."): also need a known DIB header size.
    return len(data) >= 18 and int.from_bytes(data[14:18], "little") in (
        12,
        16,
        40,
        52,
        56,
        64,
        108,
        124,
    )


def _printable(raw: bytes) -> str:
    # Client bytes go into an error message: printable ASCII only.
    return "".join(chr(c) if 32 < c < 127 else "?" for c in raw) or "?"


def _bytes(n: int) -> str:
    return f"{n} byte" if n == 1 else f"{n} bytes"
