"""Peak memory and time of an x4 upscale, whole vs tiled (SDSERVE_UPSCALE_TILE_SIZE),
as the input grows. Each run is a fresh process, so ``ru_maxrss`` is that run's peak.

With tiling the peak should stay roughly flat while the untiled peak grows with the
input area (the UNet's activations and attention at input resolution, the VAE decode at
output resolution); the blended canvas is the only buffer that grows with the image.

Usage: python -m bench.upscale_tiles [MODEL_DIR] [--sides 64,128,192] [--tile 64]
(no MODEL_DIR: the tiny random x4 upscaler, written to a temporary folder)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import prepare_engine_env

prepare_engine_env()

_CHILD = """
import json, resource, sys, time
import numpy as np
from PIL import Image
from sdserve.config import Settings
from sdserve.engine.base import BatchItem, BatchRequest
from sdserve.engine.catalog import Catalog, describe
from sdserve.engine.pipelines import DiffusersEngine
from sdserve.engine.upscale import plan
model, side, tile, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
info = describe("x4", model)
f = info.upscale_factor
eng = DiffusersEngine(Settings(upscale_tile_size=tile), Catalog(info))
eng.load()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))
req = BatchRequest("x4", "upscale", side * f, side * f, steps, 7.5, "ddim",
                   [BatchItem("j", "a photo", "", [1], image)])
t = time.perf_counter()
out = eng.generate(req, lambda s, t: set())
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tiles = len(plan(req, eng.get_model("x4").pipe, f, tile))
assert out.items["j"].images[0].size == (side * f, side * f)
print(json.dumps({"peak_mb": (peak - before) / 1024, "s": seconds, "tiles": tiles}))
"""


def run(model: str, side: int, tile: int, steps: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, model, str(side), str(tile), str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--sides", default="64,128,192")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    model = args.model
    if model is None:
        from sdserve.engine.demo_edit import create_demo_upscaler

        model = str(create_demo_upscaler(Path(tempfile.mkdtemp(prefix="sdserve-bench-")) / "x4"))
    print(f"x4 upscale, {args.steps} steps: peak RSS above the loaded model, time")
    for side in (int(s) for s in args.sides.split(",")):
        whole = run(model, side, 1 << 16, args.steps)
        tiled = run(model, side, args.tile, args.steps)
        print(
            f"input {side}x{side} -> {side * 4}x{side * 4}: "
            f"whole {whole['peak_mb']:.0f} MB {whole['s']:.2f}s | "
            f"{tiled['tiles']:.0f} tiles of <= {args.tile}: {tiled['peak_mb']:.0f} MB "
            f"{tiled['s']:.2f}s | peak ratio whole/tiled "
            f"{whole['peak_mb'] / max(tiled['peak_mb'], 1.0):.1f}x"
        )


if __name__ == "__main__":
    main()
