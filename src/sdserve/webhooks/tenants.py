"""What one outbox entry needs at send time, beyond what the queue stored.

- The URL in clear: the API seals callback URLs before they reach the job store
  (they often carry the receiver's token), so only a process holding
  SDSERVE_SECRET_KEY can read them.
- The signing secret of the entry's tenant: its own when an admin set one (stored
  sealed in the KeyStore), else the deployment's.
- Absolute links: the queue writes the job's view as clients see it (``/v1/...``);
  a receiver is not a browser on our origin, so links get SDSERVE_PUBLIC_BASE_URL.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Protocol

from sdserve.domain.errors import InvalidRequest
from sdserve.domain.jobs import Job
from sdserve.domain.workflows import Workflow
from sdserve.queue.base import OutboxEntry
from sdserve.security.base import KeyStore
from sdserve.security.server_key import Sealer

CALLBACK_PURPOSE = "callback_url"
WEBHOOK_SECRET_PURPOSE = "webhook_secret"
_LINK_KEYS = frozenset({"url", "self"})
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64


def check_tenant_secret(secret: str, field: str = "secret") -> str:
    """A tenant's secret as Standard Webhooks writes them: ``whsec_`` + base64 of 24 to
    64 random bytes (receivers' libraries expect that form). InvalidRequest if not."""
    body = secret.removeprefix("whsec_")
    try:
        raw = base64.b64decode(body, validate=True) if body != secret else b""
    except (binascii.Error, ValueError):
        raw = b""
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise InvalidRequest.single(
            field,
            f"must be whsec_ followed by base64 of {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} "
            "random bytes (leave it out to have one generated)",
        )
    return secret


class Owners(Protocol):
    """The part of JobQueue that tells whose job or workflow an entry is about."""

    def get(self, job_id: str) -> Job | None: ...

    def get_workflow(self, workflow_id: str) -> Workflow | None: ...


@dataclass(frozen=True)
class Delivery:
    url: str
    payload: dict[str, Any]
    secret: str


def absolute_links(value: Any, base_url: str) -> Any:
    """A copy of ``value`` whose relative links (``url``/``self`` values starting with
    "/") start with ``base_url``; unchanged when there is no base URL."""
    if not base_url:
        return value
    base = base_url.rstrip("/")
    if isinstance(value, dict):
        return {
            k: base + v
            if k in _LINK_KEYS and isinstance(v, str) and v.startswith("/")
            else absolute_links(v, base)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [absolute_links(v, base) for v in value]
    return value


class DeliveryResolver:
    def __init__(
        self,
        owners: Owners,
        keys: KeyStore,
        sealer: Sealer,
        default_secret: str,
        base_url: str = "",
    ) -> None:
        self.owners = owners
        self.keys = keys
        self.sealer = sealer
        self.default_secret = default_secret
        self.base_url = base_url

    def owner_of(self, entry: OutboxEntry) -> str | None:
        """The tenant of the entry's job or workflow (None: no tenant, or purged)."""
        if entry.job_id.startswith("wf_"):
            wf = self.owners.get_workflow(entry.job_id)
            return wf.owner if wf is not None else None
        job = self.owners.get(entry.job_id)
        return job.owner if job is not None else None

    def secret_for(self, owner: str | None) -> str:
        if owner is None:
            return self.default_secret
        tenant = self.keys.tenant(owner)
        if tenant is None or tenant.webhook_secret is None:
            return self.default_secret
        return self.sealer.open(tenant.webhook_secret, WEBHOOK_SECRET_PURPOSE)

    def resolve(self, entry: OutboxEntry) -> Delivery:
        """Raises SealError when the URL or secret does not open (another secret key)."""
        return Delivery(
            url=self.sealer.open(entry.url, CALLBACK_PURPOSE),
            payload=absolute_links(entry.payload, self.base_url),
            secret=self.secret_for(self.owner_of(entry)),
        )
