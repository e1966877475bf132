#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and print its path on the last line.
#
# The environment lives outside the clone, keyed by the requirement files, so a fresh clone
# reuses it; the mmcv wheel (a ~12 minute compile on 2 cores) is cached beside it.
#   VICREGL_CACHE  cache root (default: ~/.cache/vicregl-suite)
#   VICREGL_VENV   use this environment instead of the cached one
#   VICREGL_NO_MMCV=1  skip the MMSegmentation side (pretraining only)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${VICREGL_CACHE:-$HOME/.cache/vicregl-suite}"
python="${PYTHON:-python3}"
pyver="$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
key="$(cat "$root"/requirements/*.txt "$root/tools/setup_env.sh" | sha256sum | cut -c1-12)"
venv="${VICREGL_VENV:-$cache/venv-$pyver-$key}"
mmcv_version=2.1.0

if [ -f "$venv/.complete" ]; then
  echo "$venv"
  exit 0
fi

echo "[setup] creating $venv" >&2
mkdir -p "$cache"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
"${pip[@]}" --upgrade "pip==25.3" >&2
"${pip[@]}" -r "$root/requirements/pretrain.txt" -r "$root/requirements/test.txt" >&2

if [ "${VICREGL_NO_MMCV:-0}" != 1 ]; then
  "${pip[@]}" -r "$root/requirements/transfer.txt" >&2
  torch_version="$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
  wheels="$cache/wheels/torch$torch_version-$pyver"
  if ! ls "$wheels"/mmcv-$mmcv_version-*.whl >/dev/null 2>&1; then
    echo "[setup] building mmcv $mmcv_version with its CPU ops (about 12 minutes on 2 cores, done once)" >&2
    mkdir -p "$wheels"
    MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" "$venv/bin/python" -m pip wheel --no-deps \
      --no-build-isolation --no-binary mmcv "mmcv==$mmcv_version" -w "$wheels" >&2
  fi
  "${pip[@]}" --no-deps "$wheels"/mmcv-$mmcv_version-*.whl >&2
fi
touch "$venv/.complete"
echo "$venv"
