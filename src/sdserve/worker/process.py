"""A worker process: load the engine, publish readiness, drain the queue."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import socket
import threading

from sdserve.config import Settings
from sdserve.domain.errors import ModelLoadError
from sdserve.engine.process_env import prepare_engine_env
from sdserve.models.reload import install_sighup
from sdserve.observability.cache_metrics import CacheMetrics
from sdserve.queue.factory import build_queue, build_wakeups
from sdserve.results.cache import build_result_cache
from sdserve.results.revision import model_revision
from sdserve.security.server_key import load_server_key
from sdserve.startup import WORKER_BROKEN_MODEL
from sdserve.wiring import build_blobs, build_catalog
from sdserve.worker.loop import Worker, WorkerConfig, new_worker_id
from sdserve.worker.moderation import build_moderation
from sdserve.worker.registry import WorkerState, build_registry
from sdserve.worker.state_publisher import publish

log = logging.getLogger("sdserve.worker")
_PUBLISH_EVERY_S = 2.0


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
    )


def run_worker_process(settings: Settings, embedded: bool) -> None:
    parent = os.getppid()
    # `serve` forwards SIGHUP (reload models) to its workers: one still starting must
    # not die of it (the default action); the reload handler comes once it has a catalog.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if embedded:
        die_with_parent()
    prepare_engine_env()
    from sdserve.engine.device import pick_device  # torch: only in workers
    from sdserve.engine.pipelines import DiffusersEngine

    server_key = load_server_key(settings)  # a missing key fails before loading
    image_key = server_key.image_key
    queue = build_queue(settings)
    wakeups = build_wakeups(settings, "worker")
    catalog = build_catalog(settings)
    catalog.reload_on_miss = True  # a job for a model added since we started finds it
    metrics = CacheMetrics()
    engine = DiffusersEngine(
        settings, catalog, max_loaded=settings.max_loaded_models, metrics=metrics
    )
    blobs = build_blobs(settings)
    results = build_result_cache(
        settings, blobs, lambda name: model_revision(catalog.get(name)), metrics
    )
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, settings.host, metrics.registry)
    registry = build_registry(settings)
    state = WorkerState(
        id=new_worker_id(),
        pid=os.getpid(),
        ready=False,
        device=str(pick_device(settings.device)),
        host=socket.gethostname(),
    )
    stop = threading.Event()

    def publish_forever() -> None:
        while not stop.is_set():
            if embedded and os.getppid() != parent:
                log.error("parent process is gone; stopping")
                os._exit(1)
            try:
                publish(registry, state, engine)
            except Exception:  # the store is away: try again next round
                log.exception("publishing the worker state failed")
            stop.wait(_PUBLISH_EVERY_S)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    install_sighup(catalog)
    threading.Thread(target=publish_forever, name="registry", daemon=True).start()

    # Everything imported so far (torch, diffusers, transformers: ~200k objects) lives
    # as long as the process: keep it out of the collections that evicting a model runs
    # (engine/memory.py), which then cost milliseconds instead of a quarter second.
    gc.freeze()
    log.info("worker %s loading model %s", state.id, catalog.default.name)
    try:
        engine.load()
    except ModelLoadError as exc:  # a restart cannot fix the file: tell the supervisor
        log.error("worker %s cannot load its model: %s", state.id, exc.message)
        registry.remove(state.id)
        raise SystemExit(WORKER_BROKEN_MODEL) from None
    state.ready = True
    publish(registry, state, engine)
    log.info("worker %s ready", state.id)
    blobs = build_blobs(settings)
    moderation = build_moderation(settings, blobs, server_key, catalog)
    if moderation is not None:  # a missing or broken checker stops the worker here
        moderation.checker_for(catalog.default.name)
    worker = Worker(
        queue,
        engine,
        blobs,
        wakeups,
        worker_config(settings),
        state.id,
        image_key=image_key,
        moderation=moderation,
        results=results,
    )
    try:
        worker.run(stop)
    finally:
        try:
            registry.remove(state.id)
        except Exception:  # its state expires by itself
            log.exception("removing the worker state failed")
        registry.close()
        if results is not None:
            results.close()
        wakeups.close()
        queue.close()
