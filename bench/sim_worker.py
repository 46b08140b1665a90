"""A worker process with a simulated GPU: the real worker loop, queue, wake-ups,
registry and blob store from SDSERVE_* settings, but the torch-free FakeEngine,
which sleeps ``--step-delay`` seconds per denoising step (a GPU runs a whole batch
per step, so a batch costs steps x delay whatever its size).

Usage: SDSERVE_QUEUE_BACKEND=redis ... python -m bench.sim_worker [--step-delay 0.02]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from sdserve.config import Settings
from sdserve.engine.fake import FakeEngine
from sdserve.queue.factory import build_queue, build_wakeups
from sdserve.wiring import build_blobs
from sdserve.worker.loop import Worker, new_worker_id
from sdserve.worker.process import worker_config
from sdserve.worker.registry import WorkerState, build_registry


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--step-delay", type=float, default=0.02)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    queue = build_queue(settings)
    wakeups = build_wakeups(settings, "worker")
    registry = build_registry(settings)
    engine = FakeEngine(step_delay=args.step_delay)  # serves any model name
    engine.load()
    state = WorkerState(
        id=new_worker_id(),
        pid=os.getpid(),
        ready=True,
        models_loaded=engine.loaded_models(),
        device="simulated",
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def publish_forever() -> None:
        while not stop.is_set():
            state.models_loaded = engine.loaded_models()
            registry.publish(state)
            stop.wait(2.0)

    threading.Thread(target=publish_forever, daemon=True).start()
    worker = Worker(
        queue, engine, build_blobs(settings), wakeups, worker_config(settings), state.id
    )
    try:
        worker.run(stop)
    finally:
        registry.remove(state.id)
        registry.close()
        wakeups.close()
        queue.close()


if __name__ == "__main__":
    main()
