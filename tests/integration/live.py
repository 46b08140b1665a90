"""A real service for tests: uvicorn on a free port + in-process worker threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from sdserve.api.app import create_app
from sdserve.api.edge import uvicorn_tls
from sdserve.api.services import Services
from sdserve.config import Settings
from sdserve.engine.base import GenerationEngine
from sdserve.queue.factory import build_queue
from sdserve.queue.wakeups import LocalWakeupBus
from sdserve.safety.decisions import ImageChecker
from sdserve.safety.service import safety_of
from sdserve.security.audit_factory import build_audit
from sdserve.security.factory import build_keystore
from sdserve.security.server_key import load_server_key
from sdserve.webhooks.guard import AddressPolicy
from sdserve.wiring import build_blobs, build_catalog
from sdserve.worker.loop import Worker
from sdserve.worker.moderation import build_moderation
from sdserve.worker.process import worker_config
from sdserve.worker.registry import MemoryRegistry, WorkerState


@dataclass
class LiveService:
    url: str
    services: Services
    server: uvicorn.Server
    thread: threading.Thread
    workers: list[Worker] = field(default_factory=list)
    worker_threads: list[threading.Thread] = field(default_factory=list)
    stop_workers: threading.Event = field(default_factory=threading.Event)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def start_workers(
        self, engine: GenerationEngine, count: int = 1, checker: ImageChecker | None = None
    ) -> None:
        engine.load()
        cfg = worker_config(self.services.settings)
        s = self.services
        safety = safety_of(s)  # shared with the API: one decision record, one registry
        moderation = build_moderation(
            s.settings,
            s.blobs,
            s.server_key,
            s.catalog,
            log=safety.log,
            metrics=safety.metrics,
            checker_for=(lambda _model: checker) if checker is not None else None,
        )
        for i in range(count):
            worker = Worker(
                self.services.queue,
                engine,
                self.services.blobs,
                self.services.wakeups,
                cfg,
                image_key=self.services.server_key.image_key,
                moderation=moderation,
            )
            state = WorkerState(id=worker.id, pid=i, ready=True, models_loaded=["tiny"])
            self.services.registry.publish(state)
            thread = threading.Thread(target=worker.run, args=(self.stop_workers,), daemon=True)
            thread.start()
            self.workers.append(worker)
            self.worker_threads.append(thread)

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                body: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").json()
                if body["status"] in statuses:
                    return body
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job_id} stuck in {body['status']}")
                time.sleep(0.02)

    def stop(self) -> None:
        self.stop_workers.set()
        self.services.wakeups.notify_workers()
        for t in self.worker_threads:
            t.join(timeout=30)
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_live(
    settings: Settings,
    run_dispatcher: bool = False,
    clock: Callable[[], float] = time.time,
) -> LiveService:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    services = Services(
        settings=settings,
        queue=build_queue(settings),
        wakeups=LocalWakeupBus(),
        blobs=build_blobs(settings),
        catalog=build_catalog(settings),
        registry=MemoryRegistry(),
        webhook_policy=AddressPolicy(settings.webhook_allowlist),
        webhook_secret=settings.webhook_secret,
        keys=build_keystore(settings),
        audit=build_audit(settings),
        server_key=load_server_key(settings),
        clock=clock,
    )
    app = create_app(services, run_dispatcher=run_dispatcher)
    tls = uvicorn_tls(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=settings.port,
        log_level="warning",
        **tls,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    scheme = "https" if tls else "http"
    return LiveService(f"{scheme}://127.0.0.1:{settings.port}", services, server, thread)
