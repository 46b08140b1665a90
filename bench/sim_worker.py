"""A worker process with a simulated GPU: the production worker process
(`sdserve worker`: queue, wake-ups, registry, blob store, drain, metrics port) with
SDSERVE_ENGINE=fake, whose engine sleeps ``--step-delay`` seconds per denoising step
(a GPU runs a whole batch per step, so a batch costs steps x delay whatever its size).

Usage: SDSERVE_QUEUE_BACKEND=redis ... python -m bench.sim_worker [--step-delay 0.02]
"""

from __future__ import annotations

import argparse
import logging
import os

from sdserve.config import Settings
from sdserve.worker.process import run_worker_process


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--step-delay", type=float, default=0.02)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("SDSERVE_WORKER_METRICS_PORT", "0")  # many on one host
    settings = Settings(engine="fake", fake_step_ms=args.step_delay * 1000)
    run_worker_process(settings, embedded=False)


if __name__ == "__main__":
    main()
