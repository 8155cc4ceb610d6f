"""The replay report's numbers: figures, worst moments, discontinuities, rejection spans.
Rendering (plots, Markdown, HTML) is replay/report.py's.

Times are on the bag's time axis (``time_base``: sim seconds when /clock was recorded, else
seconds since the bag's first message). "x step" is a jump in units of the joint's
per-control-step velocity limit (max_velocity * dt): above 1 the adapter must clamp it.
"""

from __future__ import annotations

import itertools
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
        "time_base": result.clock.time_base if result.clock is not None else "",
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
            {"p50": as_number(diag[-1][1].get("inference_ms_p50")),
             "p99": as_number(diag[-1][1].get("inference_ms_p99"))} if diag else None),
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


def as_number(v) -> float | None:
    """A diagnostics value (a string, "n/a" or None) as a number, or None."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

