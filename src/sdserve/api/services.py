"""Everything a request handler needs, built once per app by a factory."""

from __future__ import annotations

from dataclasses import dataclass, field

from sdserve.config import Settings
from sdserve.engine.catalog import Catalog
from sdserve.observability.metrics import ApiMetrics
from sdserve.queue.base import JobQueue
from sdserve.queue.events import WakeupBus
from sdserve.storage.base import BlobStore
from sdserve.webhooks.guard import AddressPolicy
from sdserve.worker.registry import WorkerRegistry, build_registry


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

    @property
    def task_models(self) -> dict[str, str]:
        from sdserve.wiring import task_models

        return task_models(self.settings, self.catalog)

    def close(self) -> None:
        self.wakeups.close()
        self.queue.close()
        self.registry.close()


def build_services(settings: Settings) -> Services:
    from sdserve.queue.factory import build_queue, build_wakeups
    from sdserve.webhooks.signing import load_or_create_secret
    from sdserve.wiring import build_blobs, build_catalog

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Services(
        settings=settings,
        queue=build_queue(settings),
        wakeups=build_wakeups(settings, "api"),
        blobs=build_blobs(settings),
        catalog=build_catalog(settings),
        registry=build_registry(settings),
        webhook_policy=AddressPolicy(settings.webhook_allowlist),
        webhook_secret=load_or_create_secret(settings),
    )
