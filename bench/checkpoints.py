"""Choose a training step in closed loop: every checkpoint ``train --keep-every`` kept, judged
by ``qwen-vla-ros eval`` on the same development seeds, beside its validation loss.

    python bench/checkpoints.py --steps out/vln/ckpt_steps --out out/steps \\
        --eval-args "--task vln_goto --episodes 10 --seed-start 10000 --rate-factor 2"

The lowest validation loss has not picked the better closed-loop policy here (the searching
VLN run: 4/40 at its best-validation step against 12/40 for its last weights), so the choice
is made on what the robot does. Use development seeds for it, never the seeds a figure is
reported on. Each evaluation runs as its own ``qwen-vla-ros eval`` process (OUT/step_N, its
eval.json read back where it was made after its checkpoint with the same arguments).
Prints a table, writes ``checkpoints.json`` and ``checkpoints.png`` (success and validation
loss against the step). ``--also DIR`` adds checkpoints outside the folder (e.g. the run's
last one, its best one).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from qwen_vla_ros.results import made_after, save_results, wilson_interval


def kept(steps: Path | None, also: list[Path]) -> list[Path]:
    """The checkpoints to judge: ``steps``'s step_N folders in step order, then ``also``."""
    found = sorted(steps.glob("step_*"), key=lambda p: int(p.name[5:])) if steps else []
    return [*found, *also]


def step_and_val_loss(checkpoint: Path) -> tuple[int | None, float | None]:
    """The step a checkpoint was written at and its latest validation loss (train_log.json)."""
    log_path = checkpoint / "train_log.json"
    if not log_path.exists():
        return None, None
    history = json.loads(log_path.read_text()).get("history", [])
    step = history[-1]["step"] if history else None
    val = next((h["val_loss"] for h in reversed(history) if "val_loss" in h), None)
    return step, val


def eval_command(checkpoint: Path, out: Path, eval_args: str) -> list[str]:
    return [sys.executable, "-m", "qwen_vla_ros.cli", "eval", "--checkpoint", str(checkpoint),
            "--out", str(out), "--no-progress", *shlex.split(eval_args)]


def judged(checkpoint: Path, out: Path, eval_args: str) -> dict[str, Any]:
    """The checkpoint's eval.json: read back if made after it with these arguments, else run."""
    path, args_file = out / "eval.json", out / "eval_args.txt"
    if (made_after(path, checkpoint) and args_file.exists()
            and args_file.read_text() == eval_args):
        print(f"  {checkpoint.name}: read back from {path}", flush=True)
        return json.loads(path.read_text())
    subprocess.run(eval_command(checkpoint, out, eval_args), check=True)
    args_file.write_text(eval_args)
    return json.loads(path.read_text())


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted((r for r in rows if r["step"] is not None), key=lambda r: r["step"])
    fig, ax = plt.subplots(figsize=(7, 4))
    if pts:
        steps = [r["step"] for r in pts]
        rate = [r["success_rate"] for r in pts]
        lo = [r["success_rate"] - r["success_ci95"][0] for r in pts]
        hi = [r["success_ci95"][1] - r["success_rate"] for r in pts]
        ax.errorbar(steps, rate, yerr=[lo, hi], fmt="o-", color="#2563eb", capsize=3,
                    label="closed-loop success (95 % Wilson)")
        ax.set_ylim(0, 1)
        val = [(r["step"], r["val_loss"]) for r in pts if r["val_loss"] is not None]
        if val:
            ax2 = ax.twinx()
            ax2.plot(*zip(*val, strict=True), "s--", color="#dc2626", label="validation loss")
            ax2.set_ylabel("validation loss")
            ax2.legend(loc="upper right")
    ax.set_xlabel("training step")
    ax.set_ylabel("success rate")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=Path, help="train --keep-every's folder (OUT_steps)")
    ap.add_argument("--also", type=Path, nargs="*", default=[], metavar="CHECKPOINT",
                    help="more checkpoints to judge (the run's last, its best)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--eval-args", required=True,
                    help="qwen-vla-ros eval options, the same for every checkpoint (task, "
                         "episodes, development seeds, sim rate, blend, colours)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = ap.parse_args()
    checkpoints = kept(args.steps, args.also)
    if not checkpoints:
        ap.error("no checkpoints: give --steps (with step_N folders) or --also")
    names = [c.name if c.parent == args.steps else f"{c.parent.name}_{c.name}"
             for c in checkpoints]
    for c, name in zip(checkpoints, names, strict=True):
        print("$ " + shlex.join(eval_command(c, args.out / name, args.eval_args)), flush=True)
    if args.dry_run:
        return
    rows = []
    for c, name in zip(checkpoints, names, strict=True):
        r = judged(c, args.out / name, args.eval_args)
        step, val = step_and_val_loss(c)
        wins, n = int(r["successes"]), int(r["episodes"])
        rows.append({"checkpoint": name, "path": str(c), "step": step, "val_loss": val,
                     "successes": wins, "episodes": n, "success_rate": r["success_rate"],
                     "success_ci95": list(r.get("success_ci95") or wilson_interval(wins, n)),
                     "spl": r.get("spl")})
    print("\n| checkpoint | step | validation loss | success | SPL |")
    print("|---|---|---|---|---|")
    for r in rows:
        val = "-" if r["val_loss"] is None else f"{r['val_loss']:.3f}"
        spl = "-" if r["spl"] is None else f"{r['spl']:.2f}"
        print(f"| {r['checkpoint']} | {r['step']} | {val} | {r['successes']}/{r['episodes']} "
              f"| {spl} |")
    save_results(args.out / "checkpoints.json", {"eval_args": args.eval_args, "rows": rows})
    plot(rows, args.out / "checkpoints.png")
    print(f"wrote {args.out / 'checkpoints.png'}")


if __name__ == "__main__":
    main()
