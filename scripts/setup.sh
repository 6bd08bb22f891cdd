#!/usr/bin/env bash
# Create ./.venv and install xrlkit with its notebook and test extras. Safe to re-run.
# Works on CPU-only and CUDA machines: it installs the regular torch build from the package
# index (CUDA-enabled, runs fine on a CPU). A "+cpu" local build is refused, because
# torchvision from the index does not import on it ("operator torchvision::nms does not exist").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# tcmalloc: xrlkit's trainer preloads it when present (a faster allocator for training on a CPU;
# see xrlkit/runtime.py). Installed from Debian's packages where this runs as root; elsewhere
# training falls back to the system allocator and says so at start.
if ! ls /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4 >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        { apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 \
          || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1; }; } \
          || echo "note: could not install libtcmalloc-minimal4; training will use the system allocator"
    else
        echo "note: libtcmalloc-minimal4 not found (Debian/Ubuntu: sudo apt-get install libtcmalloc-minimal4); training will use the system allocator"
    fi
fi
# Chromium: tests/test_jupyterlab.py opens the explorer notebook in a real JupyterLab with it
# (headless); without it that one test skips.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get install -y -qq chromium >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }; } \
      || echo "note: could not install chromium; the JupyterLab browser test will skip"
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Some machines list a folder of local "+cpu" torch wheels via PIP_FIND_LINKS; ignore it.
export PIP_FIND_LINKS=
# pip byte-compiles what it installs on one core: ~100 s of the set-up on the 2-core Zen 3 CPU
# (torch's CUDA build alone ~45 s). Install without it, then compile on every core.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -e ".[dev]"
# compileall exits 1 where a package ships a file it cannot compile (pip skips those silently too)
.venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
.venv/bin/python - <<'PY'
import torch, torchvision
assert "+cpu" not in torch.__version__, f"torch {torch.__version__} is a +cpu build; torchvision will not import on it"
torchvision.ops.nms  # fails early if torch and torchvision do not match
print(f"xrlkit environment ready: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"CUDA available: {torch.cuda.is_available()}")
PY
