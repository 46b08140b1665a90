"""Standard Webhooks signing and the secret it uses.

The signature itself comes from the ``standardwebhooks`` library (the reference
implementation receivers verify with), so sender and receivers cannot drift apart.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from standardwebhooks import Webhook

from sdserve.config import Settings

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_FILE = "webhook_secret"


def generate_secret() -> str:
    """``whsec_`` + base64 of 24 random bytes (the format Standard Webhooks uses)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def check_secret(secret: str) -> str:
    """Return ``secret`` if the library accepts it, else raise ValueError (so a typo in
    SDSERVE_WEBHOOK_SECRET fails at start-up, not on the first delivery)."""
    try:
        Webhook(secret)
    except Exception as exc:  # the library raises several unrelated types
        raise ValueError(f"invalid webhook secret: {exc}") from None
    return secret


def load_or_create_secret(settings: Settings) -> str:
    """The configured secret, or the one kept in ``<data_dir>/webhook_secret``,
    generated on first use.

    Creation is race-free across processes (API and workers may start together):
    the secret is written to a private temp file and published with ``os.link``,
    which fails if another process already published one; then everyone reads the
    one file, so all processes sign with the same key.
    """
    if settings.webhook_secret:
        return check_secret(settings.webhook_secret)
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        _publish_secret(path, generate_secret())
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("webhook secret file %s is readable by others (mode %o)", path, mode)
    return check_secret(path.read_text(encoding="ascii").strip())


def _publish_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    # 0600 from the start: the secret never exists with wider permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secret + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sign(secret: str, msg_id: str, timestamp: float, body: bytes | str) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent as message ``msg_id``
    at ``timestamp`` (Unix seconds; receivers reject ones more than 5 minutes off, so
    pass the real send time, not a scheduling clock)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    when = datetime.fromtimestamp(int(timestamp), tz=UTC)
    signature: str = Webhook(secret).sign(msg_id=msg_id, timestamp=when, data=text)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signature,
    }
