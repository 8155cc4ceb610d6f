"""Chunk execution under inference delay, closed loop through the full ROS path.

For each execution mode (aloha_adapter ``blend``: naive, ensemble, rtc; rtc with the policy
sampling its measured-delay prefix; rtc_soft: rtc, and the steps after the prefix guided
softly toward the previous plan, policy ``rtc_soft_steps: -1``) and each injected extra
delay (policy_node ``added_latency_ms``, on top of the model's own time), ``qwen-vla-ros
eval`` runs the same unseen seeds in aloha_sim and reports per cell: success rate; at chunk
boundaries, the step the plan asked for (the previous tick's target to the new one, before
the adapter's velocity clamp) in units of the per-step velocity limit (largest over the
cell, and the median of the episodes' p99), beside the same step inside chunks for scale
(until 2026-12-05 the boundary step was measured from the last clamped command, which adds
the clamp's lag behind a fast plan); above 1.0 the clamp cut a discontinuity; jerk RMS of
the commands sent (rad/s^3, embodiment units, median over episodes); seconds holding for
lack of a chunk. ``--paced`` (eval --paced): the sim waits for the model, so the injected
delay is exactly the delay and the model's own time does not count (runtime/pacing.py): the
cells no longer depend on how fast or busy the machine is.
Prints a table, writes JSON and a plot (success and boundary jump vs delay, one line per mode).

    python bench/latency.py --checkpoint ckpt/tc --episodes 20 --seed-start 30000 \\
        --delays 0 50 100 200 300 --out out/latency

Seeds: use ones neither trained on (eval refuses those) nor used to choose anything.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.results import save_results

MODES = ("naive", "ensemble", "rtc", "rtc_soft")
# mode -> (aloha_adapter blend, policy_node parameters beside added_latency_ms)
MODE_SETUP: dict[str, tuple[str, dict[str, Any]]] = {
    "naive": ("naive", {}), "ensemble": ("ensemble", {}), "rtc": ("rtc", {}),
    "rtc_soft": ("rtc", {"rtc_soft_steps": -1})}
ACTION_NAMES = load_embodiment("aloha").action_names  # transfer_cube's body


def cell_summary(result: dict[str, Any]) -> dict[str, Any]:
    """One (mode, delay) cell from its eval.json."""
    rows = result["per_episode"]

    def values(key: str) -> list[float]:
        return [r[key] for r in rows if r.get(key) is not None]

    jumps_max, jumps_p99 = values("boundary_jump_max"), values("boundary_jump_p99")
    return {
        "episodes": len(rows), "successes": result["successes"],
        "success_rate": result["success_rate"], "seeds": result["seeds"],
        "succeeded": [r["seed"] for r in rows if r["success"]],
        "pace_timeouts": result.get("pace_timeouts"),
        "boundary_jump_max": max(jumps_max) if jumps_max else None,
        "boundary_jump_p99": float(np.median(jumps_p99)) if jumps_p99 else None,
        "jerk_rms": float(np.median(values("jerk_rms"))) if values("jerk_rms") else None,
        "hold_s": float(np.median(values("hold_s"))) if values("hold_s") else None,
        # for scale: the step the plans ask for inside a chunk (median of the episodes' p99)
        "inner_step_p99": float(np.median(values("inner_step_p99")))
        if values("inner_step_p99") else None,
        # which dimension the episodes' largest boundary step was in, by count
        "boundary_jump_dims": dict(Counter(ACTION_NAMES[int(d)]
                                           for d in values("boundary_jump_dim")).most_common()),
        "inference_ms_p50": float(np.median(values("inference_ms_p50")))
        if values("inference_ms_p50") else None,
    }


def plot(cells: dict[str, dict[int, dict[str, Any]]], path: Path, paced: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, by_delay in cells.items():
        d = sorted(by_delay)
        a.plot(d, [100 * by_delay[x]["success_rate"] for x in d], "o-", label=mode)
        b.plot(d, [by_delay[x]["boundary_jump_max"] or 0.0 for x in d], "o-", label=mode)
    delay = ("inference delay, exact (paced; ms)" if paced
             else "added inference delay (ms, on top of the model's own)")
    a.set(xlabel=delay, ylabel="success (%)", ylim=(-5, 105))
    b.set(xlabel=delay,
          ylabel="largest step asked at a chunk boundary\n(x per-step velocity limit)")
    b.axhline(1.0, color="grey", lw=0.8, ls="--")
    a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed-start", type=int, default=30_000)
    ap.add_argument("--delays", type=int, nargs="+", default=[0, 50, 100, 200, 300],
                    help="added inference delay per cell (ms)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--paced", action="store_true",
                    help="the sim waits for each chunk and command (eval --paced): the delay "
                         "is exact and the model's own time does not count")
    ap.add_argument("--rate-factor", type=float, default=1.0,
                    help="sim speed vs wall clock (paced: the most it may run)")
    args = ap.parse_args()

    from qwen_vla_ros.evaluate import evaluate

    cells: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in args.modes}
    for mode in args.modes:
        blend, params = MODE_SETUP[mode]
        for delay in args.delays:
            result = evaluate(args.checkpoint, args.out / f"{mode}_{delay}ms",
                              episodes=args.episodes, seed_start=args.seed_start, blend=blend,
                              policy_params={"added_latency_ms": float(delay), **params},
                              paced=args.paced, rate_factor=args.rate_factor,
                              progress=False, log=lambda _: None)
            cells[mode][delay] = c = cell_summary(result)
            print(f"{mode:>8} +{delay:>3} ms: {c['successes']}/{c['episodes']}  jump max "
                  f"{c['boundary_jump_max'] or 0:.2f} p99 {c['boundary_jump_p99'] or 0:.2f} "
                  f"(inside chunks p99 {c['inner_step_p99'] or 0:.2f})  "
                  f"jerk {c['jerk_rms'] or 0:.0f}  hold {c['hold_s'] or 0:.2f} s", flush=True)
    print("\n| mode | " + " | ".join(f"+{d} ms" for d in args.delays) + " |")
    print("|---|" + "---|" * len(args.delays))
    for mode in args.modes:
        row = [f"{cells[mode][d]['successes']}/{cells[mode][d]['episodes']}, jump "
               f"{cells[mode][d]['boundary_jump_max'] or 0:.2f}" for d in args.delays]
        print(f"| {mode} | " + " | ".join(row) + " |")
    save_results(args.out / "latency.json",
                 {"checkpoint": str(args.checkpoint), "episodes": args.episodes,
                  "seed_start": args.seed_start, "delays_ms": args.delays,
                  "paced": args.paced, "rate_factor": args.rate_factor,
                  "cells": {m: {str(d): c for d, c in v.items()} for m, v in cells.items()}})
    plot(cells, args.out / "latency.png", args.paced)


if __name__ == "__main__":
    main()
