"""Shared bits for the benchmarks: timing summaries and a temporary tiny model."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from sdserve.engine.process_env import prepare_engine_env

prepare_engine_env()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"{name}: n={len(ms)} p50={pct(ms, 0.5):.2f}ms p90={pct(ms, 0.9):.2f}ms "
        f"mean={statistics.fmean(ms):.2f}ms"
    )


def model_path(kind: str) -> str:
    """'demo' = the packaged trained demo if present; 'tiny' = a fresh random tiny model."""
    from sdserve.wiring import PACKAGED_DEMO, packaged_demo_available

    if kind == "demo" and packaged_demo_available():
        return str(PACKAGED_DEMO)
    from sdserve.engine.demo import create_demo_model

    path = Path(tempfile.mkdtemp(prefix="sdserve-bench-")) / "tiny"
    create_demo_model(path)
    return str(path)
