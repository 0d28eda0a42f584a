#!/usr/bin/env bash
# The prepared GPU check: TensorRT fp16 engines where `tensorrt` imports, else the CUDA torch path at fp16 under CUDA
# graphs; parity against torch fp32; the live scheduler at 16, 64 and 128 streams with fps, latency, GPU memory
# and utilisation. At most 8 minutes (the Python part keeps to its 7-minute budget; this kills at 8).
#
#   benchmarks/gpu_check.sh [--wheels DIR] [--dry-run] [gpu_check.py options...]
#
# It runs on the machine's own Python and CUDA torch (set PYTHON to choose another), never this project's pins.
# --wheels DIR installs the wheels carried in DIR (PyAV, facenet-pytorch, and pydantic with pydantic-core,
# annotated-types and typing-inspection if the machine lacks them) with --no-deps --no-index: nothing is downloaded
# and the machine's torch and numpy are never touched. Whatever is still missing skips its step, with the reason.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY="${PYTHON:-python3}"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "${WHEELS:-}" ]; then
  for wheel in "$WHEELS"/*.whl; do
    [ -e "$wheel" ] || continue
    "$PY" -m pip install --quiet --no-index --no-deps "$wheel" || echo "gpu_check: could not install $wheel"
  done
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
exec timeout --kill-after=10 480 "$PY" benchmarks/gpu_check.py "${args[@]}"
