#!/usr/bin/env bash
# One script for one H100/H200 GPU, under 8 minutes: the GPU tests, the model tests on a machine
# with CUDA, then training throughput and model FLOPs utilisation of a ~350M MegaByte and the
# equal-size baseline (bf16, fused AdamW, ZeRO-2, data from shards), each beside the same engine
# fed from memory.
#
#     bash bench/gpu.sh            # from the repository root, with the project importable
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 DS_ACCELERATOR=cuda PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c "import torch, deepspeed; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__)"

echo "== tests on CUDA"
timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_model.py tests/test_generate.py

echo "== training throughput, ~350M, bf16, ZeRO-2"
# MegaByte's step is cheap per byte: it needs a larger batch to keep the GPU busy; the baseline's
# activations at T = 8192 (28 layers × 8192 × 1024) limit it to a few sequences per step
timeout 200 "$PYTHON" bench/train.py --preset gpu-350m --models megabyte --steps 15 --warmup 5 --batch-size 16 --workers 6
timeout 200 "$PYTHON" bench/train.py --preset gpu-350m --models baseline --steps 15 --warmup 5 --batch-size 4 --workers 4
