#!/usr/bin/env bash
# The whole GPU check of the full-size policy in one prepared script (issue 12):
# per-stage p50/p99, warm-up (compile) seconds and peak memory of the full preset in bf16
# for eager and compiled inference at 10 and 4 flow steps, timed interleaved in ONE run;
# the tiny preset on CPU in the same call (its ratio must not regress); device and versions;
# then, as a second call on the same (still warm) machine, start-up to the first chunk in a
# new process that finds the compile cache the first call left.
#
# On a lent GPU machine (torch there, no internet), from the repository root:
#     bash bench/gpu.sh                  # <= 9.5 min; figures under $OUT (default out/gpu)
#     STEPS=startup bash bench/gpu.sh    # <= 2.5 min, right after it (same machine)
# Wheels for packages the machine lacks or has in another version go in .whl/ (see the
# device README); they are installed to /tmp/site first. Record device, command and figures in
# docs/benchmarks.md. Knobs: PRESET, DEVICE, DTYPE, ITERS, VARIANTS (';'-separated),
# COMPILE_MODE, BENCH_TIMEOUT (s), so the same script runs a dry pass on a CPU:
#     PRESET=tiny DEVICE=cpu DTYPE=float32 VARIANTS='eager;eager, 4 steps' bash bench/gpu.sh
set -uo pipefail

OUT=${OUT:-out/gpu}
PRESET=${PRESET:-full}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
ITERS=${ITERS:-30}
VARIANTS=${VARIANTS:-eager;eager, 4 steps;compiled decoder;compiled;compiled, 4 steps}
COMPILE_MODE=${COMPILE_MODE:-reduce-overhead}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-480}
STEPS=${STEPS:-bench tiny}
PY=${PY:-python3}
# torch.compile's kernels: the first call fills this cache, the startup step reads it
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/qwen_vla_compile_cache}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# GPU-kernel packages (flash-linear-attention, causal-conv1d) go to their own folder: once
# importable, transformers binds Qwen3.5's gated-delta rule to fla's Triton kernels for every
# device, and the tiny preset on CPU then fails ("cannot be accessed from Triton (cpu
# tensor?)", seen on an H200, 2026-11-26), so the CPU run below goes without them.
CPU_PYTHONPATH=$PYTHONPATH
kernels=() others=()
for w in .whl/*.whl; do
    [ -e "$w" ] || continue
    case "$(basename "$w")" in
        fla_core-* | flash_linear_attention-* | causal_conv1d-*) kernels+=("$w") ;;
        *) others+=("$w") ;;
    esac
done
install() {  # install WHEELS... into folder $1
    local dir=$1; shift
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$dir" "$@" || exit 1
}
if [ ${#others[@]} -gt 0 ]; then
    install /tmp/site "${others[@]}"
    export PYTHONPATH="/tmp/site:$PYTHONPATH" CPU_PYTHONPATH="/tmp/site:$CPU_PYTHONPATH"
fi
if [ ${#kernels[@]} -gt 0 ]; then
    install /tmp/site-kernels "${kernels[@]}"
    export PYTHONPATH="/tmp/site-kernels:$PYTHONPATH"
fi

{
    date -u
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
        --format=csv,noheader
    "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers",
transformers.__version__, "cuda", torch.version.cuda)'
    "$PY" -c 'import fla; print("flash-linear-attention", fla.__version__)' 2>/dev/null \
        || echo "flash-linear-attention: not installed"
    "$PY" -c 'import causal_conv1d; print("causal-conv1d", causal_conv1d.__version__)' \
        2>/dev/null || echo "causal-conv1d: not installed"
} 2>&1 | tee "$OUT/device.txt"

IFS=';' read -r -a variant_list <<< "$VARIANTS"
status=0
if [[ " $STEPS " == *" bench "* ]]; then
    echo "== $PRESET on $DEVICE ($DTYPE), variants: ${variant_list[*]}"
    timeout "$BENCH_TIMEOUT" "$PY" -m qwen_vla_ros.cli bench model --preset "$PRESET" \
        --device "$DEVICE" --dtype "$DTYPE" --iters "$ITERS" --warmup 3 \
        --variants "${variant_list[@]}" --compile-mode "$COMPILE_MODE" \
        --max-seconds "$((BENCH_TIMEOUT - 90))" \
        --json "$OUT/bench_model_${PRESET}.json" 2>&1 | tee "$OUT/bench_model_${PRESET}.log" \
        || status=$?
fi

if [[ " $STEPS " == *" tiny "* ]]; then
    echo "== tiny on CPU (the ratio must not regress)"
    PYTHONPATH=$CPU_PYTHONPATH timeout 90 "$PY" -m qwen_vla_ros.cli bench model --preset tiny \
        --device cpu --iters 20 \
        --variants eager "no layout cache" --json "$OUT/bench_model_tiny_cpu.json" 2>&1 \
        | tee "$OUT/bench_model_tiny_cpu.log" || status=$?
fi

if [[ " $STEPS " == *" startup "* ]]; then
    # a new process: build, then the first chunk of the most compiled variant the bench
    # warmed up, its kernels from the cache ($TORCHINDUCTOR_CACHE_DIR); start-up = the two
    variant=compiled
    if [ -f "$OUT/bench_model_${PRESET}.json" ]; then
        variant=$("$PY" -c 'import json, sys
v = json.load(open(sys.argv[1]))["variants"]
print(next((n for n in ("compiled", "compiled decoder") if n in v), "eager"))' \
            "$OUT/bench_model_${PRESET}.json")
    fi
    echo "== start-up with the compile cache in $TORCHINDUCTOR_CACHE_DIR: '$variant'"
    timeout 140 "$PY" -m qwen_vla_ros.cli bench model --preset "$PRESET" --device "$DEVICE" \
        --dtype "$DTYPE" --iters 3 --warmup 1 --variants "$variant" \
        --compile-mode "$COMPILE_MODE" --json "$OUT/bench_startup_${PRESET}.json" 2>&1 \
        | tee "$OUT/bench_startup_${PRESET}.log" || status=$?
    "$PY" -c 'import json, sys
r = json.load(open(sys.argv[1]))
(name, v), = r["variants"].items()
b, w = r["build_s"], v["warmup_s"]
print(f"start-up to the first chunk ({name}, compile cache present): {b + w:.1f} s = "
      f"build {b:.1f} s + first chunk {w:.1f} s")' "$OUT/bench_startup_${PRESET}.json" || status=$?
fi
exit "$status"
