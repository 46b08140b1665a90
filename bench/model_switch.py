"""Model switch time: from disk, from the host-RAM tier, and already loaded.

Three copies of a model (tiny random ones by default, or ``--model DIR`` copied three
times by reference) are served by one engine whose device tier holds one model. A
"disk" switch loads a model that is in no tier; a "ram" switch brings one back from
the RAM tier (needs an accelerator: on CPU the device is RAM, so there is no tier); an
"loaded" switch asks for the model already on the device. Switching is interleaved
(disk, ram, loaded, disk, ...) so drift hits every kind alike.

Usage: python -m bench.model_switch [--model DIR] [--rounds 5] [--device auto]
Prints one summary line per kind and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import prepare_engine_env, summary

prepare_engine_env()


def _models(source: str | None) -> list[Path]:
    root = Path(tempfile.mkdtemp(prefix="sdserve-switch-"))
    if source is None:
        from sdserve.engine.demo import create_demo_model

        return [create_demo_model(root / f"m{i}", seed=i) for i in range(3)]
    out = []
    for i in range(3):  # symlinked folders: three catalog entries, one set of files
        link = root / f"m{i}"
        link.symlink_to(Path(source).resolve(), target_is_directory=True)
        out.append(link)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch

    from sdserve.config import Settings
    from sdserve.engine.catalog import Catalog, describe
    from sdserve.engine.pipelines import DiffusersEngine

    paths = _models(args.model)
    import gc

    gc.freeze()  # as a worker process does before loading (worker/process.py)
    infos = [describe(p.name, str(p)) for p in paths]
    from sdserve.engine.device import pick_device, pick_dtype
    from sdserve.engine.memory import estimate_bytes

    dev = pick_device(args.device)
    size = estimate_bytes(str(paths[0]), pick_dtype(dev, "auto"))
    # One model on the device; the RAM tier (accelerators only) holds one more, so the
    # third model is always a disk load.
    settings = Settings(device=args.device, model_ram_tier_bytes=size * 3 // 2)
    engine = DiffusersEngine(settings, Catalog(infos[0], infos[1:]), max_loaded=1)
    a, b, c = (i.name for i in infos)

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def timed(name: str) -> float:
        sync()
        t = time.perf_counter()
        engine.get_model(name)
        sync()
        return time.perf_counter() - t

    times: dict[str, list[float]] = {"disk": [], "ram": [], "loaded": []}
    engine.get_model(a)
    engine.get_model(b)  # a -> RAM tier (accelerator) or out
    has_tier = any(r.tier == "host" for r in engine.residents())
    for _ in range(args.rounds):
        # c is in no tier: a disk load (b moves down, a drops out of a 1-model tier).
        times["disk"].append(timed(c))
        if has_tier:
            times["ram"].append(timed(b))  # b came down on the last switch
        times["loaded"].append(timed(b if has_tier else c))
        # Reset: a from disk pushes c out of the one-model RAM tier; b back on top.
        engine.get_model(a)
        engine.get_model(b)
    for kind, values in times.items():
        if values:
            print(summary(f"switch from {kind}", values))
    print(
        json.dumps(
            {
                "device": str(dev),
                "model_bytes": size,
                "model": args.model or "tiny",
                "ram_tier": has_tier,
                **{k: [round(v, 4) for v in vs] for k, vs in times.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
