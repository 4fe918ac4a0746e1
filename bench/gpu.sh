#!/usr/bin/env bash
# The GPU checks in one script for one H100/H200, in phases that can run apart (each well under
# 10 minutes; all of them about 14):
#   tests      the GPU tests and the model tests on CUDA                                 ~1 min
#   profile    one training step of the ~350M MegaByte by model part (fused loss, the logits
#              path, matmul local attention; the trainer's DeepSpeed engine at batch 16 and 32)
#              and of the equal-size baseline; the loss and the local attention alone   ~3 min
#   train      trainer throughput and MFU (bf16, ZeRO-2) of the ~350M MegaByte at batch 16 and
#              32, compiled at 16, and 64 in micro-batches of 16; the baseline at batch 4  ~4 min
#   table13    Table 13's 1.3B/218M MegaByte and a 1.4B baseline under ZeRO-3 with activation
#              checkpointing, and the MegaByte compiled under ZeRO-2                     ~5 min
#   generate   Table 9: MegaByte 1.3B/218M (8192-byte context) against a 350M transformer
#              (1024), 8192 bytes, batch 1 and 16                                         ~1 min
#
#     bash bench/gpu.sh                     # every phase, from the repository root
#     bash bench/gpu.sh profile generate    # some of them
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 DS_ACCELERATOR=cuda PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}
PHASES=${*:-tests profile train table13 generate}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c "import torch, deepspeed; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__)"

for phase in $PHASES; do
  echo "== $phase"
  case $phase in
    tests)
      timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_model.py \
        tests/test_generate.py tests/test_loss.py tests/test_local_attention.py tests/test_cuda_graphs.py ;;
    profile)
      for variant in "" "--plain-loss" "--set local_attention=matmul"; do
        # shellcheck disable=SC2086  # the variant is several words
        timeout 120 "$PYTHON" bench/profile_gpu.py --preset gpu-350m --batch-size 16 --top 12 $variant
      done
      # the trainer's engine: ZeRO's gradient buckets and step, and how busy the kernels keep the GPU
      for batch in 16 32; do
        timeout 150 "$PYTHON" bench/profile_gpu.py --preset gpu-350m --batch-size $batch --top 12 --deepspeed 2
      done
      timeout 120 "$PYTHON" bench/profile_gpu.py --preset gpu-350m:baseline --batch-size 4 --top 12
      timeout 60 "$PYTHON" bench/loss.py --batch 16 --seq-len 8192 --dim 512 --bf16
      timeout 120 "$PYTHON" bench/local_attention.py ;;
    train)
      # MegaByte's step is cheap per byte: it needs a larger batch to keep the GPU busy; the
      # baseline's activations at T = 8192 (28 layers × 8192 × 1024) limit it to a few sequences
      # (matmul local attention is in the profile phase; here the blocks compiled, now whole graphs)
      for batch in 16 32; do
        timeout 150 "$PYTHON" bench/train.py --preset gpu-350m --models megabyte --steps 10 --warmup 4 \
          --batch-size $batch --workers 6
      done
      timeout 200 "$PYTHON" bench/train.py --preset gpu-350m --models megabyte --steps 10 --warmup 4 \
        --batch-size 16 --workers 6 --compile
      # a per-optimizer-step cost (ZeRO's step, the loop's synchronisation) shrinks per byte when the
      # step accumulates several micro-batches: batch 64 in micro-batches of 16 against batch 16
      timeout 150 "$PYTHON" bench/train.py --preset gpu-350m --models megabyte --steps 6 --warmup 3 \
        --batch-size 64 --micro-batch-size 16 --workers 6
      timeout 150 "$PYTHON" bench/train.py --preset gpu-350m --models baseline --steps 10 --warmup 4 --batch-size 4 --workers 4 ;;
    table13)
      timeout 200 "$PYTHON" bench/train.py --preset gpu-table13 --models megabyte --zero-stage 3 --steps 5 --warmup 3 \
        --batch-size 16 --workers 6
      timeout 200 "$PYTHON" bench/train.py --preset gpu-table13 --models baseline --zero-stage 3 --steps 5 --warmup 3 \
        --batch-size 8 --workers 4
      # compiled: under ZeRO-3 DeepSpeed's parameter hooks break the blocks' graphs apart, so ZeRO-2
      # (one GPU holds the 1.4B model's states either way)
      timeout 300 "$PYTHON" bench/train.py --preset gpu-table13 --models megabyte --zero-stage 2 --steps 5 --warmup 3 \
        --batch-size 16 --workers 6 --compile ;;
    generate)
      timeout 240 "$PYTHON" bench/generate.py --megabyte text-split-1.3b --transformer text-transformer-350m \
        --new-bytes 8192 --batch-sizes 1 16 ;;
    *) echo "unknown phase $phase: tests, profile, train, table13 or generate" >&2; exit 2 ;;
  esac
done
