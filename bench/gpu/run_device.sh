#!/usr/bin/env bash
# One prepared run on a lent GPU machine: GPU tests + GPU benchmarks on an
# SD1.5-shaped model. Wheels for what the machine lacks travel in .whl/ (see README).
set -uo pipefail
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
echo "== GPU tests"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu -x 2>&1 | tail -25
echo "== SD1.5-shaped model"
python3 -m bench.fullsize_model /tmp/sd15
echo "== batch invariance (SD1.5-shaped, 512x512, batch 4)"
timeout 200 python3 -m bench.batch_invariance --model /tmp/sd15 --size 512 --batch 4
echo "== server vs direct (512x512, 20 steps, fp16)"
timeout 200 python3 -m bench.server_vs_direct --model /tmp/sd15 --size 512 --steps 20 --n 12
echo "== batching (8 clients, 512x512, 20 steps)"
timeout 300 python3 -m bench.batching --model /tmp/sd15 --size 512 --steps 20 --requests 32
echo "== done"
