"""The replay report: figures, worst moments, plots; written as JSON, Markdown and HTML.

Times are seconds since the bag's first message. "x step" is a jump in units of the joint's
per-control-step velocity limit (max_velocity * dt): above 1 the adapter must clamp it.
"""

from __future__ import annotations

import html
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.embodiment.spec import EmbodimentSpec

WORST = 5


def discontinuities(chunks, spec: EmbodimentSpec) -> list[dict[str, Any]]:
    """Per chunk boundary: the new chunk's first action against what the previous chunk had
    planned for that moment (chunks are stamped with their observation time)."""
    step = spec.max_velocity() * spec.dt
    out = []
    for prev, cur in itertools.pairwise(chunks):
        k = round((cur.stamp - prev.stamp) / prev.dt)
        if not 0 <= k < len(prev.actions):
            continue  # no overlap: nothing was planned for that moment
        jump = np.abs(cur.actions[0] - prev.actions[k])
        ratio = jump / step
        j = int(np.argmax(ratio))
        out.append({"t": round(cur.t, 3), "joint": spec.action_names[j],
                    "jump": float(jump[j]), "x_step": float(ratio[j])})
    return out


def rejection_spans(ticks) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = []
    for r in ticks:
        if r.rejection is None:
            continue
        reason = _generic(r.rejection)
        if spans and spans[-1]["reason"] == reason and spans[-1]["open"]:
            spans[-1].update(t_end=round(r.t, 3), ticks=spans[-1]["ticks"] + 1)
        else:
            spans.append({"t": round(r.t, 3), "t_end": round(r.t, 3), "ticks": 1,
                          "reason": reason, "example": r.rejection, "open": True})
        for s in spans[:-1]:
            s["open"] = False
    for s in spans:
        s.pop("open")
    return spans


def _generic(reason: str) -> str:
    """A rejection reason without its numbers, so that a long outage is one span."""
    return "".join(ch if not ch.isdigit() else "#" for ch in reason)


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def analyse(result, spec: EmbodimentSpec) -> dict[str, Any]:
    chunks = result.chunks
    ages = [(r.t, r.age_ms) for r in chunks if r.age_ms is not None]
    infer = [r.infer_ms for r in chunks if r.infer_ms is not None]
    disc = discontinuities(chunks, spec)
    diffs = [(r.t, r.live_diff) for r in chunks if r.live_diff is not None]
    recorded_ticks = [r for r in result.ticks if r.recorded]
    diag = result.recorded.diagnostics
    bag_s = result.source.duration
    rep: dict[str, Any] = {
        "bag": str(result.source.path), "storage": result.source.storage,
        "bag_duration_s": round(bag_s, 3), "embodiment": result.embodiment,
        "checkpoint": str(result.options.checkpoint),
        "ticks": len(result.ticks), "chunks": len(chunks),
        "rejected_ticks": sum(1 for r in result.ticks if r.rejection is not None),
        "tick_source": "recorded" if recorded_ticks else "rate",
        "wall_s": round(result.wall_s, 3),
        "replayed_span_s": round(result.span_s, 3),
        "speed_x_realtime": round(result.span_s / result.wall_s, 2) if result.wall_s else None,
        "replay_inference_ms": {"p50": _pct(infer, 50), "p99": _pct(infer, 99)},
        "observation_age_ms": {"p50": _pct([a for _, a in ages], 50),
                               "p99": _pct([a for _, a in ages], 99)},
        "recorded_inference_ms": (
            {"p50": _num(diag[-1][1].get("inference_ms_p50")),
             "p99": _num(diag[-1][1].get("inference_ms_p99"))} if diag else None),
        "live_chunks": len(result.recorded.live_chunks),
        "live_vs_replay": ({"compared": len(diffs), "max_abs_diff": max(d for _, d in diffs),
                            "median_abs_diff": float(np.median([d for _, d in diffs]))}
                           if diffs else None),
        "inputs_found": (sum(1 for r in recorded_ticks if r.inputs_match)
                         if recorded_ticks else None),
        "discontinuity_x_step": {"p50": _pct([d["x_step"] for d in disc], 50),
                                 "max": max((d["x_step"] for d in disc), default=None)},
        "errors": list(result.errors),
        "unknown_topics": dict(result.source.unknown),
        "worst": {
            "discontinuities": sorted(disc, key=lambda d: -d["x_step"])[:WORST],
            "observation_age": [{"t": round(t, 3), "age_ms": round(a, 1)}
                                for t, a in sorted(ages, key=lambda x: -x[1])[:WORST]],
            "live_vs_replay": [{"t": round(t, 3), "max_abs_diff": d}
                               for t, d in sorted(diffs, key=lambda x: -x[1])[:WORST]],
            "rejections": rejection_spans(result.ticks),
        },
    }
    rep["worst"]["timeline"] = timeline(rep["worst"], result.options.max_age * 1e3)
    return rep


LIVE_DIFF_NOTABLE = 1e-4  # below this, replay and live agree (float noise)


def timeline(worst: dict[str, Any], max_age_ms: float) -> list[dict[str, Any]]:
    """The worst moments that matter, in time order: what to look at, when, in a bag viewer.
    Notable: a jump the adapter must clamp (> 1 x step limit), an observation older than half
    the staleness limit, a replay/live difference above float noise, any outage."""
    events = [{"t": d["t"], "what": f"chunk-boundary jump {d['x_step']:.1f} x step limit "
                                    f"({d['joint']})"}
              for d in worst["discontinuities"] if d["x_step"] > 1.0]
    events += [{"t": d["t"], "what": f"observation {d['age_ms']:.0f} ms old"}
               for d in worst["observation_age"] if d["age_ms"] > 0.5 * max_age_ms]
    events += [{"t": d["t"], "what": f"replay differs from live by {d['max_abs_diff']:.3g}"}
               for d in worst["live_vs_replay"] if d["max_abs_diff"] > LIVE_DIFF_NOTABLE]
    events += [{"t": s["t"], "what": f"no observation until t={s['t_end']:.2f} s "
                                     f"({s['ticks']} ticks): {s['example']}"}
               for s in worst["rejections"]]
    return sorted(events, key=lambda e: e["t"])


def _num(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# ---- plots ----------------------------------------------------------------------------------
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
        pts = [(t, _num(d.get(key))) for t, d in diag]
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
    axes[2].set_xlabel("time since bag start (s)")
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
