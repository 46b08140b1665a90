"""A worker process: load the engine, publish readiness, drain the queue."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import threading

from sdserve.config import Settings
from sdserve.engine.process_env import prepare_engine_env
from sdserve.models.reload import install_sighup
from sdserve.queue.factory import build_queue, build_wakeups
from sdserve.security.server_key import load_server_key
from sdserve.wiring import build_blobs, build_catalog
from sdserve.worker.loop import Worker, WorkerConfig, new_worker_id
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

    image_key = load_server_key(settings).image_key  # a missing key fails before loading
    queue = build_queue(settings)
    wakeups = build_wakeups(settings, "worker")
    catalog = build_catalog(settings)
    catalog.reload_on_miss = True  # a job for a model added since we started finds it
    engine = DiffusersEngine(settings, catalog, max_loaded=settings.max_loaded_models)
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

    log.info("worker %s loading model %s", state.id, catalog.default.name)
    engine.load()
    state.ready = True
    publish(registry, state, engine)
    log.info("worker %s ready", state.id)
    worker = Worker(
        queue,
        engine,
        build_blobs(settings),
        wakeups,
        worker_config(settings),
        state.id,
        image_key=image_key,
    )
    try:
        worker.run(stop)
    finally:
        try:
            registry.remove(state.id)
        except Exception:  # its state expires by itself
            log.exception("removing the worker state failed")
        registry.close()
        wakeups.close()
        queue.close()
