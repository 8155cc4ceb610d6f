"""Validation loss per body against that body's own training batches, across runs: a joint
run beside the single-body runs it is compared with (issue 15), so that "did the body learn
as much from each of its batches" can be read off, whatever share of the steps it got.

    python bench/curves.py --out out/curves \\
        --run arm-only checkpoints/aloha_transfer_cube_tiny \\
        --run vln-only c400/ckpt --run joint out/joint/ckpt

Each ``--run LABEL DIR`` reads DIR/train_log.json (a checkpoint folder, exported or not). A
body's batches at a step: the step itself in a single-body run; in a joint run the steps that
drew that body (``embodiment`` in each history record; an exported log keeps every Nth record,
``history_every``, so the count is scaled by N). Writes ``curves.json`` and ``curves.png`` (one
panel per body, and the language probe where a run logged it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from qwen_vla_ros.learning.train import LOG_FILE
from qwen_vla_ros.results import save_results


def body_curves(log: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{body: {"val_loss": [(batches of that body, loss)], "language": [...]}} of one log."""
    history = log["history"]
    every = int(log.get("history_every", 1))
    single = log.get("embodiment") if "embodiments" not in log else None
    seen: dict[str, int] = {}
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for rec in history:
        body = rec.get("embodiment")
        if body is not None:
            seen[body] = seen.get(body, 0) + every
        for key, value in rec.items():
            if not key.startswith(("val_loss", "val_language_ratio/")):
                continue
            name = key.split("/", 1)[1] if "/" in key else single
            if name is None:  # a joint run's pooled validation loss: no one body's
                continue
            batches = rec["step"] if single is not None else seen.get(name, 0)
            kind = "language" if key.startswith("val_language_ratio/") else "val_loss"
            out.setdefault(name, {}).setdefault(kind, []).append((batches, float(value)))
    return out


def plot(runs: dict[str, dict[str, dict[str, list[tuple[int, float]]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bodies = sorted({b for curves in runs.values() for b in curves})
    fig, axes = plt.subplots(1, len(bodies), figsize=(5.5 * len(bodies), 4), squeeze=False)
    for ax, body in zip(axes[0], bodies, strict=True):
        ax2 = None
        for label, curves in runs.items():
            c = curves.get(body, {})
            if c.get("val_loss"):
                ax.plot(*zip(*c["val_loss"], strict=True), ".-", label=f"{label}: validation")
            if c.get("language") and any(v != 0 for _, v in c["language"]):
                ax2 = ax2 or ax.twinx()
                ax2.plot(*zip(*c["language"], strict=True), ":", label=f"{label}: language probe")
        ax.set_yscale("log")
        ax.set_xlabel(f"{body} batches (x16 samples)")
        ax.set_ylabel("flow-matching loss, validation")
        ax.set_title(body)
        handles, labels = ax.get_legend_handles_labels()
        if ax2 is not None:
            ax2.set_ylabel("loss told another goal / own")
            more = ax2.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        # below the panel: over it, with several runs, it hid the curves
        ax.legend(handles, labels, fontsize=7, loc="upper center", ncol=2,
                  bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", nargs=2, action="append", required=True, metavar=("LABEL", "DIR"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    runs = {label: body_curves(json.loads((Path(d) / LOG_FILE).read_text()))
            for label, d in args.run}
    for label, curves in runs.items():
        for body, c in sorted(curves.items()):
            last = c.get("val_loss", [(0, float("nan"))])[-1]
            lang = c.get("language", [(0, float("nan"))])[-1][1]
            print(f"{label:>10} {body:>6}: {last[0]:6d} batches, last validation "
                  f"{last[1]:.3f}, language probe {lang:.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    save_results(args.out / "curves.json", {"runs": {
        label: {b: {k: [list(p) for p in v] for k, v in c.items()} for b, c in curves.items()}
        for label, curves in runs.items()}})
    plot(runs, args.out / "curves.png")
    print(f"-> {args.out / 'curves.png'}")


if __name__ == "__main__":
    main()
