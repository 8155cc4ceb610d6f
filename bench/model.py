"""Chunk latency of the policy: p50/p99 per stage and peak memory, printed and written as JSON.

    python bench/model.py --preset tiny --json out/bench_model_tiny.json
    python bench/model.py --preset full --device cuda --dtype bfloat16 --json out/full.json
"""

from qwen_vla_ros.cli import main

if __name__ == "__main__":
    import sys

    raise SystemExit(main(["bench", "model", *sys.argv[1:]]))
