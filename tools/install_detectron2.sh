#!/usr/bin/env bash
# Install detectron2, the optional extra for detection transfer, at the pinned commit.
#
#   tools/install_detectron2.sh [VENV]
#
# VENV defaults to the project environment printed by tools/setup_env.sh. detectron2 has no
# usable PyPI release (0.6 predates NumPy 1.24 / Pillow 10), so it is built from its source
# repository; its setup.py imports torch, hence --no-build-isolation (torch must already be
# in VENV). The CPU build takes about a minute on 2 cores; with CUDA (nvcc + a CUDA torch)
# it also compiles the GPU ops.
#   DETECTRON2_SRC  build from this local source tree instead of GitHub (offline machines);
#                   it should be a checkout of the pinned commit.
#   MAX_JOBS        compile jobs (default: all cores).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
commit="$(sed -n 's/^DETECTRON2_COMMIT = "\([0-9a-f]\{40\}\)".*/\1/p' \
  "$root/transfer/detectron2_pin.py")"
if [ -z "$commit" ]; then
  echo "[install_detectron2] no DETECTRON2_COMMIT in transfer/detectron2_pin.py" >&2
  exit 1
fi
venv="${1:-$(bash "$root/tools/setup_env.sh" | tail -1)}"
python="$venv/bin/python"
if [ ! -x "$python" ]; then
  echo "[install_detectron2] $python does not exist: pass a virtualenv folder" >&2
  exit 1
fi
if ! "$python" -c "import torch" 2>/dev/null; then
  echo "[install_detectron2] torch is not installed in $venv; install it first (tools/setup_env.sh)" >&2
  exit 1
fi
source="git+https://github.com/facebookresearch/detectron2.git@$commit"
if [ -n "${DETECTRON2_SRC:-}" ]; then
  source="$DETECTRON2_SRC"
fi
echo "[install_detectron2] installing $source into $venv" >&2
MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$python" -m pip install --no-build-isolation "$source"
"$python" -c "import detectron2, detectron2._C; print('[install_detectron2] detectron2', detectron2.__version__, 'importable, compiled ops loaded')"
