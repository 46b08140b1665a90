"""A worker process: load the engine, publish readiness, drain the queue."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sdserve.config import Settings
from sdserve.domain.errors import ModelLoadError
from sdserve.domain.previews import previews_allowed
from sdserve.engine.base import GenerationEngine
from sdserve.engine.catalog import Catalog
from sdserve.engine.process_env import prepare_engine_env
from sdserve.models.reload import install_sighup
from sdserve.observability.cache_metrics import CacheMetrics
from sdserve.observability.prom import WorkerMetrics
from sdserve.observability.worker_http import WorkerHttp
from sdserve.queue.factory import build_queue, build_wakeups
from sdserve.results.cache import build_result_cache
from sdserve.results.revision import model_revision
from sdserve.safety.metrics import SafetyMetrics
from sdserve.security.server_key import load_server_key
from sdserve.startup import WORKER_BROKEN_MODEL
from sdserve.wiring import build_blobs, build_catalog
from sdserve.worker.loop import Worker, WorkerConfig, new_worker_id
from sdserve.worker.moderation import build_moderation
from sdserve.worker.registry import WorkerState, build_registry, published_models
from sdserve.worker.state_publisher import publish

log = logging.getLogger("sdserve.worker")
_PUBLISH_EVERY_S = 2.0
# No loop round and no denoising step for this long: /healthz fails and the platform
# restarts the worker (a step takes seconds at most; an idle loop wakes every poll).
_STUCK_S = 300.0


def die_with_parent() -> None:
    """An embedded worker must not outlive `sdserve serve` (e.g. after kill -9)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        pass  # not Linux: the parent check in the publisher thread still ends us


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        max_batch_images=settings.max_batch_images,
        batch_window_s=settings.batch_window_ms / 1000,
        lease_s=settings.lease_seconds,
        poll_interval_s=settings.poll_interval_ms / 1000,
        background_finish=True,
        affinity_max_wait_s=settings.affinity_max_wait_ms / 1000,
        drain_s=settings.drain_seconds,
        preview_every_s=settings.preview_every_s
        if previews_allowed(settings.preview_every_s, settings.image_checker)
        else 0.0,
    )


def build_engine(
    settings: Settings, cache_metrics: CacheMetrics
) -> tuple[GenerationEngine, Catalog, str]:
    """The engine, the models it serves and the device it runs on."""
    if settings.engine == "fake":
        from sdserve.engine.fake import FakeEngine

        # Serves any model name, so it stands in for whatever the API's catalog lists.
        fake = FakeEngine(step_delay=settings.fake_step_ms / 1000)
        return fake, Catalog(fake.models()[0]), "simulated"
    prepare_engine_env()
    from sdserve.engine.device import pick_device  # torch: only in workers
    from sdserve.engine.pipelines import DiffusersEngine

    catalog = build_catalog(settings)
    catalog.reload_on_miss = True  # a job for a model added since we started finds it
    engine = DiffusersEngine(
        settings, catalog, max_loaded=settings.max_loaded_models, metrics=cache_metrics
    )
    return engine, catalog, str(pick_device(settings.device))


def run_worker_process(settings: Settings, embedded: bool) -> None:
    parent = os.getppid()
    if embedded:
        die_with_parent()
    # Signals first: a SIGTERM while starting up must end the process cleanly too.
    stop = threading.Event()
    draining: list[Worker] = []

    def on_term(*_: object) -> None:
        if stop.is_set():
            return
        stop.set()
        for worker in draining:
            worker.request_drain()
        # Past the grace period nothing more is owed: hand back what still runs and go.
        timer = threading.Timer(settings.drain_seconds, _give_up, args=(draining,))
        timer.daemon = True
        timer.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_term)
    server_key = load_server_key(settings)  # a missing key fails before loading
    image_key = server_key.image_key
    queue = _starting(stop, "the queue", lambda: build_queue(settings))
    wakeups = _starting(stop, "wake-ups", lambda: build_wakeups(settings, "worker"))
    metrics = WorkerMetrics()
    # The model cache's own metrics (loads, evictions, LoRA, result cache) share the
    # worker's registry: one port, one scrape.
    cache_metrics = CacheMetrics(metrics.registry)
    engine, catalog, device = build_engine(settings, cache_metrics)
    default_model = catalog.default.name
    registry = _starting(stop, "the worker registry", lambda: build_registry(settings))
    state = WorkerState(
        id=new_worker_id(),
        pid=os.getpid(),
        ready=False,
        device=device,
        host=socket.gethostname(),
        catalog=published_models(catalog),
        default_model=default_model,
    )
    blobs = build_blobs(settings)
    results = build_result_cache(
        settings, blobs, lambda name: model_revision(catalog.get(name)), cache_metrics
    )
    worker = Worker(
        queue,
        engine,
        blobs,
        wakeups,
        worker_config(settings),
        state.id,
        image_key=image_key,
        results=results,
    )
    worker.metrics = metrics
    draining.append(worker)
    if stop.is_set():
        worker.request_drain()

    def publish_forever() -> None:
        while not stop.is_set():
            if embedded and os.getppid() != parent:
                log.error("parent process is gone; stopping")
                os._exit(1)
            state.catalog = published_models(catalog)  # SIGHUP may have reloaded it
            try:
                publish(registry, state, engine)
            except Exception:  # the store is away: try again next round
                log.exception("publishing the worker state failed")
            stop.wait(_PUBLISH_EVERY_S)

    http = _start_http(
        settings,
        metrics,
        ready=lambda: state.ready and not stop.is_set(),
        # Loading comes before the loop: only a worker past it can be stuck in it.
        alive=lambda: not (state.ready and worker.stuck(_STUCK_S)),
    )
    install_sighup(catalog)
    threading.Thread(target=publish_forever, name="registry", daemon=True).start()

    try:
        if stop.is_set():  # stopped while starting: not worth loading a model
            return
        # Everything imported so far (torch, diffusers, transformers: ~200k objects)
        # lives as long as the process: keep it out of the collections that evicting a
        # model runs (engine/memory.py), which then cost milliseconds, not a quarter second.
        gc.freeze()
        log.info("worker %s loading model %s", state.id, default_model)
        loading = time.perf_counter()
        try:
            engine.load()
        except ModelLoadError as exc:  # a restart cannot fix the file: tell the supervisor
            log.error("worker %s cannot load its model: %s", state.id, exc.message)
            registry.remove(state.id)
            raise SystemExit(WORKER_BROKEN_MODEL) from None
        metrics.model_loaded(default_model, time.perf_counter() - loading)
        # Image-check decisions are counted on this worker's own metrics port: the API's
        # /metrics never sees another process's counters.
        moderation = build_moderation(
            settings, blobs, server_key, catalog, metrics=SafetyMetrics(metrics.registry)
        )
        if moderation is not None:  # a missing or broken checker stops the worker here
            moderation.checker_for(catalog.default.name)
        worker.moderation = moderation
        state.ready = True
        metrics.ready.set(1)
        _starting(stop, "publishing readiness", lambda: publish(registry, state, engine))
        log.info("worker %s ready", state.id)
        worker.run(stop)
    finally:
        if http is not None:
            http.close()
        try:
            registry.remove(state.id)
        except Exception:  # its state expires by itself
            log.exception("removing the worker state failed")
        registry.close()
        wakeups.close()
        queue.close()


_START_RETRY_S = 120.0
T = TypeVar("T")


def _starting(stop: threading.Event, what: str, step: Callable[[], T]) -> T:
    """A start-up step that needs the store: retried while the store is away (a Redis
    restart, a worker replaced during it) instead of exiting with a traceback."""
    deadline = time.monotonic() + _START_RETRY_S
    while True:
        try:
            return step()
        except Exception as exc:
            if stop.is_set():  # told to stop while starting: nothing to hand back
                raise SystemExit(0) from None
            if time.monotonic() > deadline:
                raise
            log.warning("starting: %s failed (%s); retrying", what, exc)
            stop.wait(0.5)


def _give_up(workers: list[Worker]) -> None:
    try:
        for worker in workers:
            worker.release_inflight()
    finally:
        log.warning("drain grace period over; exiting")
        os._exit(0)


def _start_http(
    settings: Settings,
    metrics: WorkerMetrics,
    ready: Callable[[], bool],
    alive: Callable[[], bool],
) -> WorkerHttp | None:
    if not settings.worker_metrics_port:
        return None  # off
    try:
        return WorkerHttp(
            metrics.registry, ready=ready, alive=alive, port=settings.worker_metrics_port
        ).start()
    except OSError as exc:  # the port is taken: work on, but say so loudly
        log.error(
            "worker health/metrics port %d unavailable (%s); set SDSERVE_WORKER_METRICS_PORT",
            settings.worker_metrics_port,
            exc,
        )
        return None
