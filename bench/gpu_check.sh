#!/usr/bin/env bash
# The GPU check (under 8 minutes on one H200): bench/gpu_check.py with only torch, torchvision,
# timm, numpy and pillow. Writes gpu_check.json (or $1) and prints a short table.
#   bash bench/gpu_check.sh [out.json] [extra args, e.g. --quick --device cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check.json}"
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 480 python3 bench/gpu_check.py --out "$out" "$@"
