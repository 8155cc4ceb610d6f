"""VLN: what the frame history costs, and how fast the follower and transform are.

One run, interleaved so that both settings see the same machine load: the vln embodiment's
chunk latency with 0, 2 and 4 past frames (240x320, as base_sim renders), then the ROS-free
per-tick work of navigation_node's control loop (pure pursuit) and of placing a plan
(odometry lookup + transform). Prints medians, p99 and the ratio to no history; writes JSON.

    python bench/vln.py --iters 30 --json out/bench_vln.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from qwen_vla_ros.results import save_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from qwen_vla_ros.cli import _quiet_transformers

    _quiet_transformers()
    from qwen_vla_ros.model.bench import percentile
    from qwen_vla_ros.model.policy import Observation
    from qwen_vla_ros.model.presets import build_preset
    from qwen_vla_ros.runtime.follower import PurePursuit
    from qwen_vla_ros.runtime.navigation import Pose2D, PoseHistory, plan_from_chunk

    policy = build_preset("tiny", ["vln"], seed=0, device=args.device)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(5)]
    settings = (0, 2, 4)
    obs = {n: Observation(images={"front": frames[0]}, state=np.zeros(0),
                          instruction="go to the red box", embodiment="vln",
                          history=tuple((f"front {k + 1}.0 s ago", frames[k + 1])
                                        for k in reversed(range(n))))
           for n in settings}
    for n in settings:  # warm-up
        policy.predict(obs[n], seed=0)
    times: dict[int, list[float]] = {n: [] for n in settings}
    for i in range(args.iters):
        for n in settings:
            times[n].append(policy.predict(obs[n], seed=i).timing_ms["total"])
    base = statistics.median(times[0])
    rows = [{"history_frames": n, "p50_ms": statistics.median(times[n]),
             "p99_ms": percentile(times[n], 99),
             "ratio_to_no_history": statistics.median(times[n]) / base} for n in settings]

    # Control-loop work per tick (pure pursuit) and per plan (lookup + transform), ROS-free.
    follower = PurePursuit()
    path = np.array([[0.5 * k, 0.2 * k, 0.0] for k in range(1, 9)])
    follower.set_path(path, Pose2D())
    pose = Pose2D(0.1, 0.0, 0.1)
    t_step = []
    for _ in range(2000):
        t0 = time.perf_counter()
        follower.step(pose, 0.05)
        t_step.append((time.perf_counter() - t0) * 1e6)
    hist = PoseHistory(window=10.0)
    for k in range(200):
        hist.add(k * 0.05, Pose2D(0.01 * k, 0.0, 0.001 * k))
    chunk = np.column_stack([np.linspace(0.5, 4, 8), np.zeros(8), np.zeros(8), np.zeros(8)])
    t_plan = []
    for k in range(2000):
        t0 = time.perf_counter()
        plan_from_chunk(chunk, ["x", "y", "yaw", "stop"], hist.at(5.0 + (k % 100) * 0.01), 5.0)
        t_plan.append((time.perf_counter() - t0) * 1e6)
    loop = {"follower_step_us_p50": statistics.median(t_step),
            "follower_step_us_p99": percentile(t_step, 99),
            "plan_us_p50": statistics.median(t_plan), "plan_us_p99": percentile(t_plan, 99)}

    print(f"vln chunk latency, tiny preset, {args.device}, {args.iters} iterations interleaved")
    print(f"{'history frames':>15}{'p50 ms':>10}{'p99 ms':>10}{'ratio':>8}")
    for r in rows:
        print(f"{r['history_frames']:>15}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}"
              f"{r['ratio_to_no_history']:>8.2f}")
    print(f"follower step p50 {loop['follower_step_us_p50']:.1f} us, p99 "
          f"{loop['follower_step_us_p99']:.1f} us; plan (lookup + transform) p50 "
          f"{loop['plan_us_p50']:.1f} us, p99 {loop['plan_us_p99']:.1f} us")
    save_results(args.json, {"device": args.device, "iters": args.iters, "chunk": rows,
                             "control": loop})


if __name__ == "__main__":
    main()
