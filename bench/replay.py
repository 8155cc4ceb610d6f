"""Offline replay speed with the tiny model: bag seconds replayed per wall second.

Records a sim-demo bag first (or takes --bag), then replays it twice in one run: on the live
node's recorded ticks (reproducing its chunks) and at a fixed --rate. Prints the bag's
duration, wall time and the ratio, and writes JSON.

    python bench/replay.py --seconds 20 --json out/bench_replay.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from qwen_vla_ros.results import save_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bag", type=Path, help="replay this bag (default: record a demo bag)")
    ap.add_argument("--checkpoint", type=Path, help="with --bag: the checkpoint to replay")
    ap.add_argument("--seconds", type=float, default=20.0, help="demo length (sim seconds)")
    ap.add_argument("--rate", type=float, default=10.0, help="rate-tick replay (Hz)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    from qwen_vla_ros.cli import _quiet_transformers

    _quiet_transformers()
    from qwen_vla_ros.replay.bagio import open_bag
    from qwen_vla_ros.replay.offline import ReplayOptions, replay

    work = Path(tempfile.mkdtemp(prefix="bench_replay_"))
    bag, ckpt = args.bag, args.checkpoint
    if bag is None:
        from qwen_vla_ros.demos.aloha import run_sim_demo

        summary = run_sim_demo(work / "demo", seconds=args.seconds,
                               teleop_seconds=args.seconds / 2, log=lambda m: None)
        bag, ckpt = Path(summary["bag"]), Path(summary["checkpoint"])
    if ckpt is None:
        raise SystemExit("--checkpoint is needed with --bag")
    src = open_bag(bag)
    mb = sum(f.stat().st_size for f in Path(bag).glob("*") if f.is_file()) / 1e6
    rows = []
    for ticks, rate in (("recorded", 5.0), ("rate", args.rate)):
        res = replay(ReplayOptions(bag=bag, checkpoint=ckpt, out=work / f"out_{ticks}",
                                   ticks=ticks, rate_hz=rate, progress=False),
                     log=lambda m: None)
        rep = res.report
        rows.append({"ticks": ticks, "rate_hz": rate if ticks == "rate" else None,
                     "bag_duration_s": round(src.duration, 3),
                     "replayed_span_s": rep["replayed_span_s"], "wall_s": rep["wall_s"],
                     "speed_x_realtime": rep["speed_x_realtime"], "chunks": rep["chunks"],
                     "inference_ms_p50": rep["replay_inference_ms"]["p50"],
                     "live_vs_replay": rep["live_vs_replay"]})
    print(f"bag: {bag} ({src.duration:.1f} s, {mb:.0f} MB, "
          f"{sum(src.counts.values())} messages)")
    print(f"{'ticks':<10}{'chunks':>8}{'bag s':>8}{'wall s':>8}{'x real time':>13}"
          f"{'infer p50 ms':>14}  live vs replay")
    for r in rows:
        lv = r["live_vs_replay"]
        print(f"{r['ticks']:<10}{r['chunks']:>8}{r['replayed_span_s']:>8.2f}{r['wall_s']:>8.2f}"
              f"{r['speed_x_realtime']:>13.2f}{r['inference_ms_p50']:>14.1f}  "
              + (f"max |diff| {lv['max_abs_diff']:.2g} over {lv['compared']}" if lv else "-"))
    save_results(args.json, {"bag": str(bag), "bag_mb": mb, "rows": rows})


if __name__ == "__main__":
    main()
