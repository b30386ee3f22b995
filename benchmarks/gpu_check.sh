#!/usr/bin/env bash
# For a machine with a GPU: the trainer's speed on CIFAR-shaped data, against a DataLoader loop,
# and the resmooth loss's overhead there. Usage: bash benchmarks/gpu_check.sh  (from the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" benchmarks/gpu_check.py
"$PY" benchmarks/loss_overhead.py --device cuda
