"""Everything a request handler needs, built once per app by a factory."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from sdserve.config import Settings
from sdserve.engine.catalog import Catalog
from sdserve.observability.metrics import ApiMetrics
from sdserve.queue.base import JobQueue
from sdserve.queue.events import WakeupBus
from sdserve.security.audit import AuditLog, MemoryAuditLog
from sdserve.security.base import KeyStore
from sdserve.security.memory import MemoryKeyStore
from sdserve.security.ratelimit import QuotaPolicy, RateLimiter, memory_limiter
from sdserve.security.server_key import ServerKey
from sdserve.storage.base import BlobStore
from sdserve.webhooks.guard import AddressPolicy
from sdserve.worker.registry import WorkerRegistry, build_registry

if TYPE_CHECKING:
    from sdserve.safety.service import SafetyServices


@dataclass
class Services:
    settings: Settings
    queue: JobQueue
    wakeups: WakeupBus
    blobs: BlobStore
    catalog: Catalog
    registry: WorkerRegistry
    webhook_policy: AddressPolicy
    webhook_secret: str
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    keys: KeyStore = field(default_factory=MemoryKeyStore)
    server_key: ServerKey = field(default_factory=ServerKey.ephemeral)
    # Key expiry and revocation are judged by this clock (tests step it, never sleep).
    clock: Callable[[], float] = time.time
    rate_limiter: RateLimiter = field(default_factory=memory_limiter)
    quota_policy: QuotaPolicy | None = None  # None: built from settings at first use
    audit: AuditLog = field(default_factory=MemoryAuditLog)
    # Prompt gate, decision record, quarantine: built on first use (safety.service).
    safety: SafetyServices | None = None

    @property
    def task_models(self) -> dict[str, str]:
        from sdserve.wiring import task_models

        return task_models(self.settings, self.catalog)

    def close(self) -> None:
        self.wakeups.close()
        self.queue.close()
        self.registry.close()
        self.keys.close()
        self.audit.close()
        if self.safety is not None:
            self.safety.close()


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def build_services(settings: Settings) -> Services:
    from sdserve.queue.factory import build_queue, build_wakeups
    from sdserve.security.audit_factory import build_audit
    from sdserve.security.factory import build_keystore
    from sdserve.security.ratelimit import build_limiter
    from sdserve.security.retention import tenant_ttls
    from sdserve.security.server_key import load_server_key
    from sdserve.webhooks.signing import load_or_create_secret
    from sdserve.wiring import build_blobs, build_catalog

    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tenant_ttls(settings)  # a bad retention override fails at start
    server_key = load_server_key(settings)  # first: a missing key fails before any connect
    return Services(
        settings=settings,
        queue=build_queue(settings),
        wakeups=build_wakeups(settings, "api"),
        blobs=build_blobs(settings),
        catalog=build_catalog(settings),
        registry=build_registry(settings),
        webhook_policy=AddressPolicy(settings.webhook_allowlist),
        webhook_secret=load_or_create_secret(settings),
        keys=build_keystore(settings),
        server_key=server_key,
        rate_limiter=build_limiter(settings),
        audit=build_audit(settings),
        quota_policy=QuotaPolicy.from_settings(settings),  # a bad quota fails at start
    )
