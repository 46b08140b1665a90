#!/usr/bin/env bash
# One prepared run on a lent GPU machine: GPU tests + GPU benchmarks on an
# SD1.5-shaped model. Wheels for what the machine lacks travel in .whl/ (see README).
set -uo pipefail
# The whole script takes longer than one device call (10 min): run it as
# `PART=1 bash bench/gpu/run_device.sh` (tests, model, engine vs diffusers) and then
# `PART=2 ...` (batching, model switch, cold start).
PART=${PART:-all}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src:$PWD
else
  export PYTHONPATH=$PWD/src:$PWD
fi
export PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1
nvidia-smi -L
python3 -c "import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__, torch.cuda.get_device_name())"
if [ "$PART" != 2 ]; then
echo "== GPU tests"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu -x 2>&1 | tail -25
echo "== SD1.5-shaped model"
python3 -m bench.fullsize_model /tmp/sd15
echo "== engine vs plain and compiled diffusers (batch 1/4/8), SDXL-shaped s/step"
timeout 420 python3 -m bench.gpu.compare --model /tmp/sd15 --batches 1,4,8
fi
[ -d /tmp/sd15 ] || python3 -m bench.fullsize_model /tmp/sd15
if [ "$PART" != 1 ]; then
echo "== batch invariance (SD1.5-shaped, 512x512, batch 4)"
timeout 200 python3 -m bench.batch_invariance --model /tmp/sd15 --size 512 --batch 4
echo "== server vs direct (512x512, 20 steps, fp16)"
timeout 200 python3 -m bench.server_vs_direct --model /tmp/sd15 --size 512 --steps 20 --n 12
echo "== batching (8 clients, 512x512, 20 steps)"
timeout 300 python3 -m bench.batching --model /tmp/sd15 --size 512 --steps 20 --requests 32
echo "== model switch: from disk, from the RAM tier, loaded"
timeout 200 python3 -m bench.model_switch --model /tmp/sd15 --device cuda
echo "== cold start to ready (sdserve serve, SD1.5-shaped, compiled UNet + VAE)"
timeout 300 python3 - <<'PY'
import tempfile, time
from pathlib import Path
from sdserve.testing import ServeProcess
for compiled in ("false", "true"):
    t0 = time.perf_counter()
    proc = ServeProcess(Path(tempfile.mkdtemp()) / "data", model="/tmp/sd15", device="cuda",
                        torch_compile=compiled, compile_vae=compiled)
    try:
        proc.wait_ready(timeout=280)
        print(f"cold start (compile={compiled}): {time.perf_counter() - t0:.1f} s to ready")
    finally:
        proc.stop()
PY
fi
echo "== done"
