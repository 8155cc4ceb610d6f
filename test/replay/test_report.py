"""Report arithmetic on hand-made ticks: chunk-boundary jumps, outage spans, the timeline."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.replay.analysis import discontinuities, rejection_spans, timeline
from qwen_vla_ros.replay.offline import TickResult


def test_jump_is_measured_against_the_previous_plan_at_the_same_moment():
    spec = load_embodiment("vx300s_single")
    step = spec.max_velocity() * spec.dt
    a = np.tile(np.linspace(0, 1, 50)[:, None], (1, spec.action_dim))
    prev = TickResult(tick=0.0, t=0.0, stamp=10.0, actions=a, dt=spec.dt)
    # 10 steps later, starting exactly on the old plan except 0.2 rad off on the elbow.
    new = a[10:].copy()
    new = np.vstack([new, np.repeat(new[-1:], 10, axis=0)])
    new[0, 2] += 0.2
    cur = TickResult(tick=0.2, t=0.2, stamp=10.0 + 10 * spec.dt, actions=new, dt=spec.dt)
    (d,) = discontinuities([prev, cur], spec)
    assert d["joint"] == "elbow" and d["jump"] == pytest.approx(0.2)
    assert d["x_step"] == pytest.approx(0.2 / step[2])
    late = TickResult(tick=2.0, t=2.0, stamp=10.0 + 60 * spec.dt, actions=new, dt=spec.dt)
    assert discontinuities([prev, late], spec) == []  # no overlap, nothing to compare


def test_outages_merge_into_spans_and_the_timeline_is_chronological():
    ticks = [TickResult(tick=t, t=t, rejection=r) for t, r in (
        (1.0, "camera 'a' is stale: 400 ms old"), (1.2, "camera 'a' is stale: 600 ms old"),
        (1.4, None), (1.6, "no valid joint state for ['x']"))]
    spans = rejection_spans(ticks)
    assert [(s["t"], s["t_end"], s["ticks"]) for s in spans] == [(1.0, 1.2, 2), (1.6, 1.6, 1)]
    worst = {"discontinuities": [{"t": 3.0, "x_step": 5.0, "joint": "j"},
                                 {"t": 0.5, "x_step": 0.5, "joint": "j"}],
             "observation_age": [{"t": 2.0, "age_ms": 250.0}, {"t": 0.1, "age_ms": 20.0}],
             "live_vs_replay": [{"t": 0.2, "max_abs_diff": 1e-7}],
             "rejections": spans}
    events = timeline(worst, max_age_ms=300.0)
    assert [e["t"] for e in events] == [1.0, 1.6, 2.0, 3.0]  # float noise, small jumps out
