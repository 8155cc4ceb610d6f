#!/usr/bin/env bash
# Training on a lent GPU machine (issue 10's GPU figure): the tiny preset (or PRESET) trained
# for MINUTES from a pack, bf16 autocast; samples/s, peak memory, the log, the loss curve and
# the checkpoint (a tar without the optimiser state) come back under $OUT.
#
# Bags and ROS cannot go there (64 MiB per call, no rosbags or rclpy), so first, here:
#     qwen-vla-ros pack --data DEMOS --out .gpu_data/pack   # ~1 MB per episode; git-ignored
# then on the device machine (carry .gpu_data), from the repository root:
#     MINUTES=8 bash bench/gpu_train.sh
# and evaluate the checkpoint here, through the ROS path (qwen-vla-ros eval). Knobs: PACK,
# PRESET, MINUTES, BATCH, LR, DEVICE (cpu: a dry pass), PY, TRAIN_ARGS (more train options,
# e.g. run 9's "--state-noise 0.2 --cameras cam_high --image-pixels 81920 --start-share 0.5";
# the pack must then be made with the same --cameras and --image-pixels). Its transformers may be older
# than requirements.txt's: the tiny preset builds, infers and trains with 5.17 (checked
# here); .whl/ wheels are installed first when present, as in gpu.sh.
set -uo pipefail

OUT=${OUT:-out/gpu_train}
PACK=${PACK:-.gpu_data/pack}
PRESET=${PRESET:-tiny}
MINUTES=${MINUTES:-8}
BATCH=${BATCH:-64}
LR=${LR:-3e-4}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
TRAIN_ARGS=${TRAIN_ARGS:-}
CKPT=/tmp/qwen_vla_gpu_ckpt
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
{
    date -u
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
        --format=csv,noheader
    "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers",
transformers.__version__)'
    du -sh "$PACK"
} 2>&1 | tee "$OUT/device.txt"

rm -rf "$CKPT"
limit=$("$PY" -c "import sys; print(int(float(sys.argv[1]) * 60) + 180)" "$MINUTES")
timeout "$limit" "$PY" -m qwen_vla_ros.cli train --data "$PACK" --out "$CKPT" \
    --preset "$PRESET" --minutes "$MINUTES" --batch "$BATCH" --lr "$LR" --warmup 200 \
    --val-every 250 --checkpoint-every 1000000 --seed 0 --device "$DEVICE" --no-progress \
    $TRAIN_ARGS 2>&1 \
    | tee "$OUT/train.log"
status=$?
if [ -f "$CKPT/qwen_vla.json" ]; then
    tar -C "$CKPT" --exclude train_state.pt -czf "$OUT/ckpt.tar.gz" . && cp "$CKPT/train.png" "$OUT/"
fi
exit "$status"
