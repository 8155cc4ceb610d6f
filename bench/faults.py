"""Fault drills (qwen_vla_ros/drills.py): the simulated ALOHA stack as separate processes, each
fault injected once; prints a table (detection time, what was reported, arms held, survivors)
and writes JSON.

    python bench/faults.py --json out/faults.json [--checkpoint CKPT] [--only "camera stopped"]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from qwen_vla_ros.results import save_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="default: a random-init tiny one")
    ap.add_argument("--only", action="append", help="drill name (repeatable)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--logs", type=Path, help="keep each process's log here")
    args = ap.parse_args()
    from qwen_vla_ros.drills import as_dicts, run_drills

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            from qwen_vla_ros.model.presets import build_preset

            ckpt = build_preset("tiny", ["aloha"]).save_pretrained(Path(tmp) / "ckpt")
        results = run_drills(args.logs or Path(tmp) / "drills", ckpt, names=args.only)
    print(f"\n{'fault':30s} {'mode':7s} {'detect (wall)':>13s} {'(sim)':>7s} held  others  "
          "reported")
    for r in results:
        held = r.within_limits and r.motion_after < 1e-6
        print(f"{r.name:30s} {r.mode:7s} {r.detect_wall_s!s:>13s} {r.detect_sim_s!s:>7s} "
              f"{'yes' if held else 'NO':5s} {'ok' if not r.died else ','.join(r.died):7s} "
              f"{r.reported}")
    save_results(args.json, {"drills": as_dicts(results)})


if __name__ == "__main__":
    main()
