"""Quarantine: images held for review, stored encrypted where no route can serve them.

Each held image is sealed with AES-256-GCM (a key derived from SDSERVE_SECRET_KEY; the
image id is the authenticated data, so a sealed image cannot be swapped for another)
and stored in the blob store under a *hidden id*: an HMAC of the image id, never given
to anyone. ``GET /v1/images/<id>`` finds nothing under the public id until a reviewer
approves (``release`` decrypts it there); a rejection deletes it.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sdserve.domain.errors import SdserveError
from sdserve.storage.base import BlobStore

_NONCE = 12
KEY_PURPOSE = "quarantine"


class QuarantineError(SdserveError):
    type = "quarantine_error"


class Quarantine:
    def __init__(self, blobs: BlobStore, key: bytes) -> None:
        self.blobs = blobs
        self._aead = AESGCM(hashlib.sha256(key + b"/aead").digest())
        self._name_key = hashlib.sha256(key + b"/names").digest()

    def hidden_id(self, image_id: str) -> str:
        digest = hmac.new(self._name_key, image_id.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{digest}.{image_id.rsplit('.', 1)[-1]}"

    def put(self, image_id: str, data: bytes, tenant: str | None) -> None:
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, data, image_id.encode())
        self.blobs.put(self.hidden_id(image_id), sealed, tenant=tenant)

    def holds(self, image_id: str, tenant: str | None) -> bool:
        return self.blobs.exists(self.hidden_id(image_id), tenant=tenant)

    def open(self, image_id: str, tenant: str | None) -> bytes | None:
        sealed = self.blobs.get(self.hidden_id(image_id), tenant=tenant)
        if sealed is None:
            return None
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], image_id.encode())
        except InvalidTag as exc:
            raise QuarantineError(
                f"quarantined image {image_id} does not open (SDSERVE_SECRET_KEY changed?)"
            ) from exc

    def release(self, image_id: str, tenant: str | None) -> bool:
        """Store the image under its public id and drop the sealed copy."""
        data = self.open(image_id, tenant)
        if data is None:
            return False
        self.blobs.put(image_id, data, tenant=tenant)
        self.blobs.delete(self.hidden_id(image_id), tenant=tenant)
        return True

    def delete(self, image_id: str, tenant: str | None) -> bool:
        return self.blobs.delete(self.hidden_id(image_id), tenant=tenant)
