"""One checkpoint, two bodies: arm-only, VLN-only and joint training at the same size and the
same training minutes, each judged closed loop (issue 15's table).

    python bench/joint.py --arm-data data/run10 --vln-data data/vln --minutes 90 --out out/joint \\
        --train-args "--batch 16 --lr 3e-4 --warmup 200 --val-every 250 --seed 0"

Runs, one after another so each has the machine to itself: ``qwen-vla-ros train`` three times
(``--data aloha=ARM``, ``--data vln=VLN``, ``--data aloha=ARM vln=VLN`` with ``--weights``),
the same ``--preset``, ``--minutes`` and ``--train-args`` for all three (``--arm-cameras``
only where there is ALOHA data: ``train --cameras`` names the arm's cameras; likewise
``--image-pixels-of`` only where that body has data); then ``eval`` of
transfer_cube (arm-only, joint; ``--blend rtc``), of vln_goto (VLN-only, joint) and the
language check (the same start poses, each of the four colours; VLN-only, joint). Every seed
range is an argument: use seeds that neither training saw nor anything was chosen on. Prints
the table, writes ``joint.json`` and ``joint.png``. ``--dry-run`` prints the plan only;
``--skip-train`` evaluates checkpoints already in OUT; ``--reuse-evals`` reads back an
evaluation already in OUT with the same settings (task, seeds, colours, sim rate, blend) made
after its checkpoint was written, so the three runs can be made in separate sessions
(``--runs vln``, later ``--runs joint`` ...) and the table drawn at the end with
``--skip-train --reuse-evals``.

Every training keeps its lowest-validation-loss checkpoint too (``train --best-out``, in
OUT/RUN/best); ``--checkpoint best`` evaluates those instead of the last ones.

Wall time: 3 x ``--minutes`` of training plus about 30 minutes of evaluation on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from qwen_vla_ros.results import made_after, save_results
from qwen_vla_ros.sim.vln_task import episodes_in_run

RUNS = ("arm", "vln", "joint")
COLOURS = "red,green,blue,yellow"


def train_command(run: str, args: argparse.Namespace) -> list[str]:
    data = {"arm": [f"aloha={args.arm_data}"], "vln": [f"vln={args.vln_data}"],
            "joint": [f"aloha={args.arm_data}", f"vln={args.vln_data}"]}[run]
    cmd = [sys.executable, "-m", "qwen_vla_ros.cli", "train", "--data", *data,
           "--out", str(args.out / run / "ckpt"), "--preset", args.preset,
           "--minutes", str(args.minutes), "--best-out", str(args.out / run / "best"),
           *shlex.split(args.train_args)]
    if run in ("arm", "joint") and args.arm_cameras:
        cmd += ["--embodiment", "aloha", "--cameras", *args.arm_cameras]
    bodies = {"arm": {"aloha"}, "vln": {"vln"}, "joint": {"aloha", "vln"}}[run]
    pixels = [p for p in args.image_pixels_of if p.partition("=")[0] in bodies]
    if pixels:
        cmd += ["--image-pixels-of", *pixels]
    if run == "joint" and args.weights:
        cmd += ["--weights", *args.weights]
    return cmd


def evaluations(run: str, args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(name, evaluate() keywords) for one run's checkpoint."""
    out: list[tuple[str, dict[str, Any]]] = []
    if run in ("arm", "joint"):
        out.append(("transfer_cube", dict(task="transfer_cube", episodes=args.episodes,
                                          seed_start=args.arm_seed_start, blend="rtc")))
    if run in ("vln", "joint"):
        out.append(("vln_goto", dict(task="vln_goto", episodes=args.episodes,
                                     seed_start=args.vln_seed_start, rate_factor=2.0)))
        out.append(("language", dict(task="vln_goto", episodes=args.language_starts,
                                     seed_start=args.language_seed_start, rate_factor=2.0,
                                     colours=COLOURS)))
    return out


def eval_command(checkpoint: Path, out: Path, kw: dict[str, Any]) -> list[str]:
    """``qwen-vla-ros eval`` for one of ``evaluations``' entries: a process of its own, so an
    evaluation after a 90-minute training runs the package as it is then, not as this
    process imported it before the training (a change in between broke that once)."""
    cmd = [sys.executable, "-m", "qwen_vla_ros.cli", "eval", "--checkpoint", str(checkpoint),
           "--out", str(out), "--task", kw["task"], "--episodes", str(kw["episodes"]),
           "--seed-start", str(kw["seed_start"]), "--rate-factor",
           str(kw.get("rate_factor", 1.0))]
    if kw.get("blend"):
        cmd += ["--blend", kw["blend"]]
    if kw.get("colours"):
        cmd += ["--colours", kw["colours"]]
    return cmd


def saved(out: Path, checkpoint: Path, kw: dict[str, Any]) -> dict[str, Any] | None:
    """The evaluation in ``out`` if it was made with the settings ``kw`` after ``checkpoint``
    was written; None otherwise (it is then run again)."""
    path = out / "eval.json"
    if not made_after(path, checkpoint):
        return None
    r = json.loads(path.read_text())
    colours = [c for c in kw.get("colours", "").split(",") if c]
    seeds = set(range(kw["seed_start"], kw["seed_start"] + kw["episodes"]))
    same = (r.get("task") == kw["task"] and set(r.get("seeds", [])) == seeds
            and r.get("episodes") == episodes_in_run(kw["episodes"], tuple(colours))
            and r.get("colours", []) == colours
            and r.get("rate_factor") == kw.get("rate_factor", 1.0)
            and r.get("blend") == kw.get("blend"))
    return r if same else None


def row(run: str, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def get(name: str, key: str):
        return results[name].get(key) if name in results else None

    # the language check's share of episodes reaching the instructed object is its success rate
    return {"run": run, "transfer_cube_success": get("transfer_cube", "success_rate"),
            "vln_goto_success": get("vln_goto", "success_rate"),
            "vln_spl": get("vln_goto", "spl"), "language_share": get("language", "success_rate")}


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["transfer_cube_success", "vln_goto_success", "language_share"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.25
    for i, r in enumerate(rows):
        ax.bar([k + i * width for k in range(len(keys))],
               [100 * (r[k] or 0) for k in keys], width, label=r["run"])
    ax.set_xticks([k + (len(rows) - 1) * width / 2 for k in range(len(keys))],
                  ["transfer_cube", "vln_goto", "language check"])
    lang = keys.index("language_share")  # its chance (1 in 4), drawn over its own bars only
    ax.hlines(25, lang - width / 2, lang + (len(rows) - 0.5) * width, color="grey", lw=0.8,
              ls="--", label="chance (language check)")
    ax.set_ylim(0, 100)
    ax.set_ylabel("success (%)")
    ax.set_title("same size, same minutes: arm-only, VLN-only, joint")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arm-data", type=Path, required=True, help="transfer_cube bags")
    ap.add_argument("--vln-data", type=Path, required=True, help="vln_goto bags")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, required=True, help="training minutes per run")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--train-args", default="", help="more train options, for all three runs")
    ap.add_argument("--arm-cameras", nargs="+", default=[], metavar="CAMERA",
                    help="the ALOHA cameras the arm and joint runs see (train --cameras); "
                         "default all")
    ap.add_argument("--image-pixels-of", nargs="*", default=[], metavar="EMBODIMENT=N",
                    help="a body's own pixels per frame (train --image-pixels-of), given to "
                         "the runs with that body's data")
    ap.add_argument("--weights", nargs="*", default=[], metavar="EMBODIMENT=W",
                    help="joint run's sampling weights (train --weights)")
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--arm-seed-start", type=int, default=40_000)
    ap.add_argument("--vln-seed-start", type=int, default=41_000)
    ap.add_argument("--language-starts", type=int, default=10,
                    help="start poses of the language check (x 4 colours; five were too few: "
                         "one checkpoint read 1/20 and 10/20 on two sets of five)")
    ap.add_argument("--language-seed-start", type=int, default=42_000)
    ap.add_argument("--checkpoint", choices=("last", "best"), default="last",
                    help="evaluate each run's last checkpoint or the one with the lowest "
                         "validation loss (train --best-out; evaluations go to NAME_best)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--reuse-evals", action="store_true",
                    help="read back evaluations already in OUT with the same settings")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = ap.parse_args()

    for run in args.runs:
        if not args.skip_train:
            print("$ " + shlex.join(train_command(run, args)), flush=True)
        for name, kw in evaluations(run, args):
            print(f"  eval {run}/{name}: {kw}", flush=True)
    if args.dry_run:
        return

    rows = []
    for run in args.runs:
        if not args.skip_train:
            subprocess.run(train_command(run, args), check=True)
        best = args.checkpoint == "best"
        ckpt, results = args.out / run / ("best" if best else "ckpt"), {}
        for name, kw in evaluations(run, args):
            where = args.out / run / (f"{name}_best" if best else name)
            old = saved(where, ckpt, kw) if args.reuse_evals else None
            if old is not None:
                print(f"  eval {run}/{name}: read back from {where}", flush=True)
            if old is None:
                subprocess.run(eval_command(ckpt, where, kw), check=True)
            results[name] = old if old is not None else json.loads(
                (where / "eval.json").read_text())
        rows.append(row(run, results))
    print("\n| checkpoint | transfer_cube success | vln_goto success | vln SPL | language check |")
    print("|---|---|---|---|---|")
    for r in rows:
        spl = "-" if r["vln_spl"] is None else f"{r['vln_spl']:.2f}"
        print(f"| {r['run']} | {pct(r['transfer_cube_success'])} | "
              f"{pct(r['vln_goto_success'])} | {spl} | {pct(r['language_share'])} |")
    save_results(args.out / "joint.json", {
        "minutes": args.minutes, "preset": args.preset, "train_args": args.train_args,
        "weights": args.weights, "episodes": args.episodes, "checkpoint": args.checkpoint,
        "seed_starts": {"transfer_cube": args.arm_seed_start, "vln_goto": args.vln_seed_start,
                        "language": args.language_seed_start}, "rows": rows})
    plot(rows, args.out / "joint.png")


if __name__ == "__main__":
    main()
