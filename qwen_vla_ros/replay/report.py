"""The replay report rendered: plots, Markdown and HTML, next to report.json. The numbers
come from replay/analysis.py.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.replay.analysis import analyse, as_number, discontinuities


def plot_joints(result, spec: EmbodimentSpec, recorded, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qwen_vla_ros.replay.summary import MODE_COLORS

    n = spec.action_dim
    cols = 2 if n > 4 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(14 if cols == 2 else 8, 2.0 * rows),
                             sharex=True, squeeze=False)
    clock = result.clock
    paths = []
    for r in result.chunks:  # each chunk over its horizon, on the bag's time axis
        tk = np.array([clock.axis_of_clock(r.stamp + k * r.dt) for k in range(len(r.actions))])
        paths.append((tk, r.actions))
    tm = np.array([t for t, _ in recorded.measured]) if recorded else np.zeros(0)
    m = np.array([v for _, v in recorded.measured]) if recorded and recorded.measured else None
    tc = np.array([t for t, _ in recorded.commands]) if recorded else np.zeros(0)
    c = np.array([v for _, v in recorded.commands]) if recorded and recorded.commands else None
    t_end = clock.axis(result.source.start_ns + round(result.source.duration * 1e9))
    modes = recorded.modes if recorded else []
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        for k, (t, mode) in enumerate(modes):
            b = modes[k + 1][0] if k + 1 < len(modes) else t_end
            ax.axvspan(t, b, color=MODE_COLORS.get(mode, "#ddd"), alpha=0.12, lw=0)
        for tk, a in paths:
            ax.plot(tk, a[:, i], color="#16a34a", lw=0.6, alpha=0.6)
        if m is not None:
            ax.plot(tm, m[:, i], color="k", lw=1.0, label="measured")
        if c is not None:
            ax.plot(tc, c[:, i], color="#dc2626", lw=0.8, ls="--", label="recorded command")
        d = spec.action[i]
        ax.set_ylabel(f"{d.name}\n[{d.unit}]", fontsize=7)
        ax.tick_params(labelsize=7)
    axes.flat[0].plot([], [], color="#16a34a", lw=0.8, label="replayed chunks")
    axes.flat[0].legend(fontsize=7, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel(f"{clock.time_base} (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_timeline(result, rep: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(12, 7), sharex=True)
    chunks = result.chunks
    axes[0].plot([r.t for r in chunks], [r.age_ms for r in chunks], ".-", lw=0.8)
    rej = [r.t for r in result.ticks if r.rejection is not None]
    if rej:
        axes[0].plot(rej, [0] * len(rej), "x", color="#dc2626", label="no observation")
        axes[0].legend(fontsize=7)
    axes[0].set_ylabel("observation age (ms)", fontsize=8)
    axes[1].plot([r.t for r in chunks], [r.infer_ms for r in chunks], ".", ms=3,
                 label="replay (this machine)")
    diag = result.recorded.diagnostics
    for key, style in (("inference_ms_p50", "-"), ("inference_ms_p99", "--")):
        pts = [(result.clock.axis(log), as_number(d.get(key))) for log, d in diag]
        pts = [(t, v) for t, v in pts if v is not None]
        if pts:
            axes[1].plot(*zip(*pts, strict=True), style, color="#f59e0b",
                         label=f"recorded {key[-3:]}")
    axes[1].set_ylabel("inference (ms)", fontsize=8)
    axes[1].legend(fontsize=7)
    disc = discontinuities(chunks, result.spec)
    axes[2].plot([d["t"] for d in disc], [d["x_step"] for d in disc], ".-", lw=0.8)
    axes[2].axhline(1.0, color="#dc2626", lw=0.8, ls=":")
    axes[2].set_ylabel("chunk boundary jump\n(x step limit)", fontsize=8)
    axes[2].set_xlabel(f"{result.clock.time_base} (s)")
    for ax in axes:
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ---- text -----------------------------------------------------------------------------------
def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def _sections(rep: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) tables shared by the Markdown and HTML writers."""
    lv = rep["live_vs_replay"] or {}
    ri = rep["recorded_inference_ms"] or {}
    summary = [
        ["bag", f"{rep['bag']} ({rep['storage']}, {_fmt(rep['bag_duration_s'])} s)"],
        ["embodiment / checkpoint", f"{rep['embodiment']} / {rep['checkpoint']}"],
        ["times in", rep.get("time_base") or "n/a"],
        ["ticks", f"{rep['ticks']} ({rep['tick_source']}), {rep['chunks']} chunks, "
                  f"{rep['rejected_ticks']} without an observation"],
        ["replay speed", f"{_fmt(rep['speed_x_realtime'])} x real time "
                         f"({_fmt(rep['replayed_span_s'])} s of bag in {_fmt(rep['wall_s'])} s)"],
        ["inference (replay)", f"p50 {_fmt(rep['replay_inference_ms']['p50'], 1)} ms, "
                               f"p99 {_fmt(rep['replay_inference_ms']['p99'], 1)} ms"],
        ["inference (recorded)", f"p50 {_fmt(ri.get('p50'), 1)} ms, "
                                 f"p99 {_fmt(ri.get('p99'), 1)} ms"],
        ["observation age", f"p50 {_fmt(rep['observation_age_ms']['p50'], 1)} ms, "
                            f"p99 {_fmt(rep['observation_age_ms']['p99'], 1)} ms"],
        ["chunk boundary jump", f"p50 {_fmt(rep['discontinuity_x_step']['p50'])}, "
                                f"max {_fmt(rep['discontinuity_x_step']['max'])} x step limit"],
        ["live vs replay", (f"{lv['compared']} chunks compared, max |diff| "
                            f"{_fmt(lv['max_abs_diff'])}, median {_fmt(lv['median_abs_diff'])}"
                            if lv else "no live chunks to compare")],
    ]
    w = rep["worst"]
    return [
        ("Summary", ["", ""], summary),
        ("Worst moments, in time order", ["t (s)", "what"],
         [[_fmt(e["t"]), e["what"]] for e in w["timeline"]]),
        ("Worst chunk-boundary jumps", ["t (s)", "joint", "jump", "x step limit"],
         [[_fmt(d["t"]), d["joint"], _fmt(d["jump"], 4), _fmt(d["x_step"])]
          for d in w["discontinuities"]]),
        ("Oldest observations", ["t (s)", "age (ms)"],
         [[_fmt(d["t"]), _fmt(d["age_ms"], 1)] for d in w["observation_age"]]),
        ("Largest live-vs-replay differences", ["t (s)", "max |diff|"],
         [[_fmt(d["t"]), _fmt(d["max_abs_diff"])] for d in w["live_vs_replay"]]),
        ("No observation (policy would not infer)", ["from (s)", "to (s)", "ticks", "reason"],
         [[_fmt(s["t"]), _fmt(s["t_end"]), str(s["ticks"]), s["example"]]
          for s in w["rejections"]]),
        ("Bag problems", ["message"], [[e] for e in rep["errors"]]),
    ]


def to_markdown(rep: dict[str, Any], images: list[str]) -> str:
    lines = ["# Replay report", ""]
    for title, header, rows in _sections(rep):
        lines += [f"## {title}", ""]
        if not rows:
            lines += ["none", ""]
            continue
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
    lines += [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def to_html(rep: dict[str, Any], images: list[str]) -> str:
    e = html.escape
    out = ["<!doctype html><meta charset='utf-8'><title>Replay report</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}</style>",
           "<h1>Replay report</h1>"]
    for title, header, rows in _sections(rep):
        out.append(f"<h2>{e(title)}</h2>")
        if not rows:
            out.append("<p>none</p>")
            continue
        out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        out.append("</table>")
    out += [f"<p><img src='{e(name)}' style='max-width:100%'></p>" for name in images]
    return "\n".join(out) + "\n"


def write_report(result, spec: EmbodimentSpec) -> dict[str, Any]:
    out = result.options.out
    rep = analyse(result, spec)
    recorded = None
    if result.clock is not None and spec.robots and spec.state_dim == spec.action_dim:
        from qwen_vla_ros.replay.bagio import BagError
        from qwen_vla_ros.replay.summary import read_aloha_bag

        try:
            recorded = read_aloha_bag(result.source.path, spec)
        except BagError as exc:
            rep["errors"].append(f"recorded commands/measurements unreadable: {exc}")
    images = []
    if result.clock is not None:
        images = [plot_joints(result, spec, recorded, out / "joints.png").name,
                  plot_timeline(result, rep, out / "timeline.png").name]
    rep["files"] = {"bag": str(result.out_bag), "images": images}
    (out / "report.json").write_text(json.dumps(rep, indent=1))
    (out / "report.md").write_text(to_markdown(rep, images))
    (out / "report.html").write_text(to_html(rep, images))
    result.report = rep
    return rep
