#!/usr/bin/env bash
# Fetch into .whl/ the wheels benchmarks/gpu_check.sh needs beyond PyTorch, PyYAML and tqdm, for a GPU
# machine that cannot reach a package index: pydantic (the config schema, with its three dependencies)
# and kornia (the TPS reference). Run it here, where pip can reach an index; the versions are this
# checkout's environment's. gpu_check.sh installs whatever lies in .whl/ before it starts.
#
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]     # the GPU machine's Python, default 3.12; Linux x86-64
set -euo pipefail
py="${1:-3.12}"
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || { echo "gpu_wheels.sh: $python not found; run 'make setup' first (or set PYTHON=...)" >&2; exit 2; }
pins=$("$python" - <<'PY'
from importlib.metadata import version
names = ["pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions", "kornia", "kornia_rs"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PY
)
mkdir -p .whl
# shellcheck disable=SC2086  # one argument per pin
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $pins
ls .whl
