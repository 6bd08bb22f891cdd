#!/usr/bin/env bash
# Create ./.venv and install xrlkit with its notebook and test extras. Safe to re-run.
# Works on CPU-only and CUDA machines: it installs the regular torch build from the package
# index (CUDA-enabled, runs fine on a CPU). A "+cpu" local build is refused, because
# torchvision from the index does not import on it ("operator torchvision::nms does not exist").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Some machines list a folder of local "+cpu" torch wheels via PIP_FIND_LINKS; ignore it.
export PIP_FIND_LINKS=
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
.venv/bin/python - <<'PY'
import torch, torchvision
assert "+cpu" not in torch.__version__, f"torch {torch.__version__} is a +cpu build; torchvision will not import on it"
torchvision.ops.nms  # fails early if torch and torchvision do not match
print(f"xrlkit environment ready: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"CUDA available: {torch.cuda.is_available()}")
PY
