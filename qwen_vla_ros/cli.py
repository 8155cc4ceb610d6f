"""``qwen-vla-ros``: the command-line tool.

    qwen-vla-ros checkpoint tiny OUT_DIR        write a complete random-init tiny checkpoint
    qwen-vla-ros bench model --preset tiny|full [--device cuda --dtype bfloat16] --json OUT
    qwen-vla-ros demo [--seconds N] [--out DIR] [--checkpoint DIR]   simulated ALOHA, recorded
    qwen-vla-ros bringup NAME [arg:=value ...]  the launch file's nodes, in one process
    qwen-vla-ros embodiments                    list the embodiments in config/
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from qwen_vla_ros.model.presets import build_preset

    policy = build_preset(args.preset, args.embodiment or None, seed=args.seed)
    out = policy.save_pretrained(args.out_dir)
    print(f"wrote {args.preset} checkpoint to {out} "
          f"(embodiments: {', '.join(sorted(policy.embodiments))})")
    return 0


def cmd_bench_model(args: argparse.Namespace) -> int:
    from qwen_vla_ros.model.bench import format_result, run_model_bench

    result = run_model_bench(args.preset, device=args.device, dtype=args.dtype,
                             iters=args.iters, warmup=args.warmup, steps=args.steps)
    print(format_result(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from qwen_vla_ros.demo import format_summary, run_sim_demo

    summary = run_sim_demo(out=Path(args.out), seconds=args.seconds,
                           teleop_seconds=args.teleop_seconds, checkpoint=args.checkpoint,
                           seed=args.seed, rate_factor=args.rate_factor)
    print(format_summary(summary))
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0


def cmd_bringup(args: argparse.Namespace) -> int:
    from qwen_vla_ros.bringup import run

    values = {}
    for item in args.args:
        if ":=" not in item:
            raise SystemExit(f"argument '{item}' is not NAME:=VALUE")
        k, v = item.split(":=", 1)
        values[k] = v
    run(args.name, values)
    return 0


def cmd_embodiments(args: argparse.Namespace) -> int:
    from qwen_vla_ros.embodiment.spec import available_embodiments, load_embodiment

    for name in available_embodiments():
        spec = load_embodiment(name)
        print(f"{name}: {spec.kind}, {spec.action_dim} action dims, {spec.horizon} steps at "
              f"{spec.control_rate_hz:g} Hz, cameras {list(spec.cameras)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen-vla-ros", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("checkpoint", help="write a random-init checkpoint of a preset")
    p.add_argument("preset", choices=["tiny", "full"])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--embodiment", action="append", help="limit to these (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="what", required=True)
    m = bench.add_parser("model", help="chunk latency p50/p99 and peak memory")
    m.add_argument("--preset", choices=["tiny", "full"], default="tiny")
    m.add_argument("--device", default="cpu")
    m.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    m.add_argument("--iters", type=int, default=20)
    m.add_argument("--warmup", type=int, default=3)
    m.add_argument("--steps", type=int, default=10, help="flow steps")
    m.add_argument("--json", help="write the figures here")
    m.set_defaults(func=cmd_bench_model)

    p = sub.add_parser("demo", help="the main job: simulated ALOHA closed loop (see README)")
    p.add_argument("--seconds", type=float, default=20.0, help="sim seconds in all")
    p.add_argument("--teleop-seconds", type=float, default=9.5,
                   help="sim seconds in TELEOP (scripted leader) before POLICY")
    p.add_argument("--rate-factor", type=float, default=1.0, help="sim speed vs wall clock")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="policy checkpoint (default: make a tiny one in OUT)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bringup", help="start a bringup's nodes in one process (no ros2 launch)")
    p.add_argument("name", help="config/bringup/NAME.yaml: aloha, aloha_sim")
    p.add_argument("args", nargs="*", help="launch arguments as NAME:=VALUE")
    p.set_defaults(func=cmd_bringup)

    p = sub.add_parser("embodiments", help="list configured embodiments")
    p.set_defaults(func=cmd_embodiments)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_transformers()
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
