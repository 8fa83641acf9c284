#!/usr/bin/env bash
# The GPU check (under 8 minutes on one H200): bench/gpu_check.py with only torch, torchvision,
# timm, numpy and pillow. Writes out/gpu_check.json (or $1) and prints a short table. Without CUDA
# it refuses the full sizes in one line and points at --quick.
#   bash bench/gpu_check.sh [out.json] [extra args, e.g. --quick --device cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/gpu_check.json}"
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
# exec: this script's process becomes `timeout`, in the script's process group, so Ctrl-C or a kill of
# the script reaches timeout, which passes the signal on to the check (no orphan keeps running)
PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec timeout 480 python3 bench/gpu_check.py --out "$out" "$@"
