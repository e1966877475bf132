#!/usr/bin/env bash
# The whole pretraining benchmark on one lent GPU, in one go (about 4-5 minutes on one H100):
# the three reference settings (ResNet-50 2x224 b256, ResNet-50 2x224+6x96 b128, ConvNeXt-S
# 2x224+6x96 b48; official heads, the recipes' bf16 + channels_last and optimisations) with
# the step/ceiling goals, peak memory against the official code's, the step's breakdown, the
# PIL and fast input pipelines from JPEG files and end to end, plus one row per optimisation
# switched off. Prints ONE Markdown table; also writes it, the JSON figures and the machine's
# description to $OUT (default ./benchmark-gpu-<date>/). See docs/performance.md.
#
#   bash tools/benchmark_gpu.sh                 # python from $PYTHON, else `python`
#   PYTHON=/path/to/venv/bin/python OUT=/tmp/bench bash tools/benchmark_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUT="${OUT:-benchmark-gpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

"$PY" - <<'EOF' | tee "$OUT/machine.txt"
import os, torch, torchvision
assert torch.cuda.is_available(), "no CUDA device visible: this script is for a GPU machine"
p = torch.cuda.get_device_properties(0)
print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB; {os.cpu_count()} CPU cores; "
      f"torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision {torchvision.__version__}")
EOF
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv \
    >> "$OUT/machine.txt" 2>/dev/null || true

start=$(date +%s)
"$PY" tools/benchmark_pretrain.py --matrix gpu --ablations --json "$OUT/benchmark.json" \
    --jpeg-root "$OUT/jpeg" "$@" 2> >(tee "$OUT/progress.log" >&2) | tee "$OUT/table.md"
echo
echo "total $(( $(date +%s) - start )) s; figures in $OUT/ (table.md, benchmark.json, progress.log)"
rm -rf "$OUT/jpeg"
