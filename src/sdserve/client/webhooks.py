"""Verify a webhook from sdserve (Standard Webhooks: HMAC-SHA256 over
``{webhook-id}.{webhook-timestamp}.{body}`` with the ``whsec_`` secret), without the
server's dependencies."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from sdserve.client.errors import SdserveClientError

DEFAULT_TOLERANCE_S = 300


class WebhookVerificationError(SdserveClientError):
    """The request is not a genuine, fresh webhook from this service."""


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The payload, if ``body`` was signed with ``secret`` less than ``tolerance``
    seconds from now; else WebhookVerificationError. Pass the raw body as received."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        stamp = lower["webhook-timestamp"]
        signatures = lower["webhook-signature"]
    except KeyError as exc:
        raise WebhookVerificationError(f"missing header {exc.args[0]}") from None
    try:
        sent = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number") from None
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old or in the future")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise WebhookVerificationError("the secret is not a whsec_ base64 secret") from None
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    digest = hmac.new(key, f"{msg_id}.{stamp}.{text}".encode(), hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode()
    for part in signatures.split():
        version, _, signature = part.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            payload: dict[str, Any] = json.loads(text)
            return payload
    raise WebhookVerificationError("no signature matches")
