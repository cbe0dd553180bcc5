#!/usr/bin/env bash
# GPU check: train the paper config (256², 284M parameters) in bf16 for a few
# hundred steps, eager and under torch.compile, and report images/s and model FLOPs utilisation
# against a bf16 matmul peak measured in the same run. Budget: under 5 minutes on an H200.
#
# Runs from the source tree, no install: it needs PyTorch, PyYAML and tqdm from the GPU image and
# pydantic (the config schema) from it or from .whl/. Without kornia the reference is the target
# itself (recorded in the JSON). `bash benchmarks/gpu_wheels.sh` fetches both into .whl/ on a
# machine with a package index; this script installs what lies there first (docs/speed.md).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # writes OUT_DIR/gpu_check*.json (default: metrics/)
#
# On a copy without .git, pass the commit the copy was made from, so the JSONs record it:
#   LINEBRIDGE_COMMIT=<sha> bash benchmarks/gpu_check.sh
set -euo pipefail
out="${1:-${OUT:-metrics}}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 -m linebridge.cli bench --gpu-check --steps 300 --out "$out/gpu_check.json"
python3 -m linebridge.cli bench --gpu-check --steps 200 --compile --out "$out/gpu_check_compile.json"
