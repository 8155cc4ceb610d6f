"""Compare checkpoints' closed-loop evaluations side by side: each row pools one checkpoint's
eval.json files of one check (e.g. vln_goto on two sets of seeds) into one success figure with
its 95 % Wilson interval; prints a table, writes ``evals.json`` and ``evals.png`` (one panel
per check, one bar per run).

    python bench/evals.py --out out/compare \\
        --eval single-colour vln_goto s17/vln/vln_goto s17/dev2 \\
        --eval single-colour language s17/vln/language s17/lang2 \\
        --eval mixed vln_goto s19/vln/vln_goto s19/dev2 ...

Each ``--eval LABEL CHECK DIR [DIR ...]``: the run's label, the check's name (any word; rows
with the same check share a panel), and the folders holding eval.json (or the files). For
vln_goto the table adds the success split by where episodes began (``success_by_start``) and
the failures by kind (``failure_kinds``: at start / at another object / out of time / collided /
short / elsewhere).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from qwen_vla_ros.results import pool_evals, save_results


def read_eval(path: Path) -> dict[str, Any]:
    return json.loads((path / "eval.json" if path.is_dir() else path).read_text())


def row(label: str, check: str, paths: list[Path]) -> dict[str, Any]:
    """One table row: the pooled figure of ``paths``, and for vln_goto the split by start."""
    results = [read_eval(p) for p in paths]
    pooled = pool_evals(results)
    out = {"run": label, "check": check, "files": [str(p) for p in paths], **pooled,
           # the language check's chance: 1 in the room's objects
           "chance": results[0].get("language_check", {}).get("chance")}
    if pooled["task"] == "vln_goto":
        from qwen_vla_ros.sim.vln_task import failure_kinds, success_by_start

        episodes = [r for res in results for r in res["per_episode"]]
        out["success_by_start"] = success_by_start(episodes)
        out["failures"] = failure_kinds(episodes)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | check | success | rate (95 % Wilson) | SPL | beside another object "
             "/ clear of all | failures: at start / at another object / out of time / "
             "collided / short / elsewhere |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["success_ci95"]
        spl = "-" if r["spl"] is None else f"{r['spl']:.2f}"
        split = r.get("success_by_start")
        where = "-" if split is None else " / ".join(
            f"{c['successes']}/{c['episodes']}" for c in split.values())
        fails = "-" if "failures" not in r else " / ".join(map(str, r["failures"].values()))
        lines.append(f"| {r['run']} | {r['check']} | {r['successes']}/{r['episodes']} | "
                     f"{r['success_rate']:.0%} ({lo:.0%}-{hi:.0%}) | {spl} | {where} | "
                     f"{fails} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    checks = list(dict.fromkeys(r["check"] for r in rows))
    runs = list(dict.fromkeys(r["run"] for r in rows))
    colours = plt.get_cmap("tab10")
    bars = [max(2, sum(r["check"] == check for r in rows)) for check in checks]
    fig, axes = plt.subplots(1, len(checks), figsize=(0.75 * sum(bars) + 0.8 * len(checks)
                                                      + 0.8, 3.8),
                             squeeze=False, gridspec_kw={"width_ratios": bars})
    for ax, check in zip(axes[0], checks, strict=True):
        # the runs this check has, side by side; a run keeps its colour in every panel
        present = [(i, r) for i, run in enumerate(runs)
                   for r in rows if r["run"] == run and r["check"] == check]
        for x, (i, r) in enumerate(present):
            lo, hi = r["success_ci95"]
            rate = r["success_rate"]
            ax.bar(x, rate, color=colours(i), label=r["run"])
            ax.errorbar(x, rate, yerr=[[rate - lo], [hi - rate]], color="k", capsize=4)
            ax.text(x, hi + 0.02, f"{r['successes']}/{r['episodes']}", ha="center",
                    fontsize=8)
        ax.set_xlim(-0.6, len(present) - 0.4)
        chance = next((r["chance"] for r in rows if r["check"] == check and r["chance"]),
                      None)
        if chance:  # labelled inside the panel: text outside it would squeeze every panel
            ax.axhline(chance, color="0.4", ls="--", lw=1)
            ax.text(0.98, chance + 0.01, "chance", ha="right", fontsize=7, color="0.4",
                    transform=ax.get_yaxis_transform())
        ax.set_title(check)
        ax.set_xticks([])
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("success (95 % Wilson)")
    # every run, also one missing from the first check
    handles = [Patch(color=colours(i), label=run) for i, run in enumerate(runs)]
    fig.legend(handles=handles, loc="lower center", ncol=len(runs), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", nargs="+", action="append", required=True,
                    metavar="LABEL CHECK DIR", help="a run's label, the check, its eval folders")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = []
    for spec in args.eval:
        if len(spec) < 3:
            ap.error(f"--eval needs LABEL CHECK DIR [DIR ...], got {spec}")
        rows.append(row(spec[0], spec[1], [Path(p) for p in spec[2:]]))
    print(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    save_results(args.out / "evals.json", {"rows": rows})
    plot(rows, args.out / "evals.png")
    print(f"wrote {args.out / 'evals.png'}")


if __name__ == "__main__":
    main()
