"""Client input images: strict decoding to RGB images / L masks, and their stored form.

Pillow only (no torch): the API decodes at submit, the worker loads the stored PNG.
Rules are in docs/images.md.
"""

from sdserve.imaging.b64 import decode_base64
from sdserve.imaging.decode import ImageLimits, decode_image, decode_mask
from sdserve.imaging.store import encode_png, load_stored, pixel_sha256

__all__ = [
    "ImageLimits",
    "decode_base64",
    "decode_image",
    "decode_mask",
    "encode_png",
    "load_stored",
    "pixel_sha256",
]
