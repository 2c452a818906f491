#!/usr/bin/env bash
# GPU runner smoke (the self-hosted GPU job of .github/workflows/ci.yml runs this; under 10 minutes on one GPU):
#   1. vla doctor (Vulkan device, CUDA, rendering)
#   2. the scripted smoke benchmark on the GPU runner, gated with --fail-under 0.95
#   3. benchmarks.bench_gpu: openvla-7b architecture (random init, bf16) chunk latency + peak memory, and a
#      GPU-vectorized vla bench (--sim-backend physx_cuda --num-envs 16, batched checkpoint inference, one video
#      per episode) -> benchmarks/results/gpu.json
# Without a CUDA device it prints what it would measure and exits 0.
# Env: PY (python with the project installed; default .venv/bin/python), OUT (smoke results; default
# results/gpu-smoke), GPU_JSON (default benchmarks/results/gpu.json).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/gpu-smoke}
GPU_JSON=${GPU_JSON:-benchmarks/results/gpu.json}

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_smoke: SKIPPED: no CUDA device (torch.cuda.is_available() is False)."
  echo "gpu_smoke: on a GPU it runs: vla doctor; vla bench --policy scripted --benchmark smoke --fail-under 0.95;"
  "$PY" -m benchmarks.bench_gpu --out "$GPU_JSON"
  exit 0
fi
set -x
"$PY" -m scripts.cli doctor
"$PY" -m scripts.cli bench --policy scripted --benchmark smoke --out "$OUT" --fail-under 0.95 --no-progress
"$PY" -m scripts.cli gallery "$OUT"
"$PY" -m benchmarks.bench_gpu --out "$GPU_JSON"
