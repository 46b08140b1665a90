"""SDSERVE_SECRET_KEY: the one server secret, and the keys derived from it.

Each use gets its own key, derived with HMAC-SHA256(secret, "sdserve/<purpose>"), so
no two uses ever share key material:
- ``image_ids``: image ids are HMAC(key, "<job id>:<index>"), so they cannot be
  derived from a job id without the key, yet stay deterministic per (job, index);
- ``seal``: AES-256-GCM for what must be stored but not in clear (callback URLs,
  which may carry a receiver's token, and per-tenant webhook secrets).

The embedded deployment generates it once into <data_dir>/secret_key (0600). A
Redis deployment's processes share no disk, so there it must come from the
environment, the same value in every API and worker process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sdserve.config import Settings
from sdserve.domain.errors import SdserveError
from sdserve.security.files import read_or_create

SECRET_KEY_FILE = "secret_key"
MIN_SECRET_KEY_LENGTH = 32
SEALED_PREFIX = "enc1:"
_NONCE_BYTES = 12


class SecretKeyMissing(SdserveError):
    type = "configuration_error"


class SealError(SdserveError):
    """A sealed value does not open: damaged, or sealed under another secret key."""

    type = "seal_error"


class Sealer:
    """AES-256-GCM with a random nonce per value; the purpose is authenticated data, so
    a value sealed for one purpose does not open as another."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, text: str, purpose: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode(), purpose.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, value: str, purpose: str) -> str:
        """The clear text; a value without the prefix was stored before sealing
        existed (a 0.1 data dir's callback URLs) and is returned as it is."""
        if not value.startswith(SEALED_PREFIX):
            return value
        try:
            raw = base64.urlsafe_b64decode(value[len(SEALED_PREFIX) :])
            clear = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], purpose.encode())
        except (InvalidTag, ValueError) as exc:
            raise SealError(
                f"a sealed {purpose} does not open with this SDSERVE_SECRET_KEY "
                "(was the key changed?)"
            ) from exc
        return clear.decode()


class ServerKey:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_KEY_LENGTH:
            raise SecretKeyMissing(
                f"SDSERVE_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters"
            )
        self._secret = secret
        self.image_key = self.derive("image_ids")
        self.sealer = Sealer(self.derive("seal"))

    def derive(self, purpose: str) -> bytes:
        return hmac.new(self._secret, f"sdserve/{purpose}".encode(), hashlib.sha256).digest()

    def __repr__(self) -> str:  # never the secret, in a traceback or a debugger
        return "ServerKey(<secret>)"

    @classmethod
    def ephemeral(cls) -> ServerKey:
        """A random key for one process (tests, in-memory deployments)."""
        return cls(generate_secret_key().encode())


def generate_secret_key() -> str:
    return secrets.token_urlsafe(48)


def load_server_key(settings: Settings) -> ServerKey:
    """From SDSERVE_SECRET_KEY, else (embedded) <data_dir>/secret_key, created once."""
    configured = settings.secret_key.get_secret_value()
    if configured:
        return ServerKey(configured.encode())
    if settings.queue_backend == "redis":
        raise SecretKeyMissing(
            "SDSERVE_SECRET_KEY is required with SDSERVE_QUEUE_BACKEND=redis: every API and "
            "worker process must share it (e.g. `openssl rand -base64 48`, kept in a secret "
            "store)"
        )
    path = settings.data_dir / SECRET_KEY_FILE
    return ServerKey(read_or_create(path, generate_secret_key).encode())
