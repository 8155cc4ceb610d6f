"""The control rate from quantised, reordered clock readings (``summary.span_rate``): plain
numpy, no ROS."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.replay.summary import span_rate

STEP = 0.02  # the sim's /clock step (one 50 Hz control tick)


def readings(true_times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What the recorder stamps: the last clock step it had received, up to a step early or
    late against the message (the ends of the span set one step out on purpose)."""
    exact = np.round(true_times / STEP)
    ticks = exact + rng.integers(-1, 2, len(true_times))
    ticks[0], ticks[-1] = exact[0] + 1, exact[-1] - 1  # the span reads two steps short
    return ticks * STEP


def test_a_50_hz_stream_reads_50_hz_where_the_span_count_reads_over_1_percent_more():
    rng = np.random.default_rng(0)
    r = np.concatenate([readings(np.arange(175) * STEP, rng),
                        readings(10.0 + np.arange(150) * STEP, rng)])
    assert span_rate(r, max_gap=0.25) == pytest.approx(50.0, rel=0.003)
    first = r[r < 5.0]  # the naive figure over one span, for contrast
    assert (len(first) - 1) / (first[-1] - first[0]) > 50.0 * 1.01


def test_missed_ticks_lower_the_rate():
    rng = np.random.default_rng(1)
    ticks = np.array([k for k in range(250) if k % 5 != 4])  # every fifth tick missed: 40 Hz
    assert span_rate(readings(ticks * STEP, rng), max_gap=0.25) == pytest.approx(40.0, rel=0.01)


def test_a_rate_that_changes_within_a_span_reads_as_its_mean():
    """50 Hz, then every other tick missed (as while the single-process demo infers): the
    figure is the span's intervals over its duration, where one line fitted through the whole
    span (the summary until 2026-12-05) reads 6 % high."""
    rng = np.random.default_rng(2)
    ticks = np.concatenate([np.arange(100), 100 + 2 * np.arange(50)])
    mean = (len(ticks) - 1) / ((ticks[-1] - ticks[0]) * STEP)
    r = readings(ticks * STEP, rng)
    assert span_rate(r, max_gap=0.25) == pytest.approx(mean, rel=0.01)
    whole = 1.0 / np.polyfit(np.arange(len(r)), r, 1)[0]
    assert abs(whole / mean - 1) > 0.03


def test_gaps_split_spans_and_short_spans_say_nothing():
    assert span_rate(np.array([0.0, 0.02, 1.0, 1.02, 2.0]), max_gap=0.25) is None
    # Two spans, the pause between them not counted.
    t = np.concatenate([np.arange(10) * 0.1, 5.0 + np.arange(10) * 0.1])
    assert span_rate(t, max_gap=0.25) == pytest.approx(10.0)


def handover_bag(first_policy_offset: float):
    """TELEOP commands lead the measured pose by 3 steps in joint 0; the mode switch is read at
    t = 1.0, and a TELEOP command is read at that same clock step. POLICY then starts at the
    measured pose plus ``first_policy_offset`` steps and moves one step per tick."""
    from qwen_vla_ros.embodiment.spec import load_embodiment
    from qwen_vla_ros.replay.summary import BagData

    spec = load_embodiment("aloha")
    step = spec.max_velocity() * spec.dt
    data = BagData(time_base="sim time (/clock)", modes=[(0.5, "TELEOP"), (1.0, "POLICY")])
    measured = np.zeros(14)
    for n in range(26, 51):  # t = 0.52 .. 1.00: TELEOP
        t = n * STEP
        data.measured.append((t, measured.copy()))
        data.commands.append((t, measured + 3 * step * np.eye(14)[0]))
    start = measured + first_policy_offset * step * np.eye(14)[0]
    for n in range(51, 80):  # POLICY
        data.commands.append((n * STEP, start + (n - 51) * step * np.eye(14)[0]))
    data.command_times = [t for t, _ in data.commands]
    return data, spec


def test_a_teleop_command_read_at_the_switch_step_is_not_the_handover():
    from qwen_vla_ros.replay.summary import summarize

    data, spec = handover_bag(first_policy_offset=0.0)
    assert summarize(data, spec)["handover"]["max_jump_over_step_limit"] == pytest.approx(1.0)


def test_a_policy_that_starts_away_from_the_measured_pose_is_reported():
    from qwen_vla_ros.replay.summary import summarize

    data, spec = handover_bag(first_policy_offset=3.0)
    hand = summarize(data, spec)["handover"]
    assert hand["max_jump_over_step_limit"] >= 2.0 and hand["max_jump_joint"] == \
        spec.action_names[0]


def test_the_handover_is_measured_from_the_pose_the_adapter_started_from():
    """Under load the adapter acts on the switch ticks after the recorder reads it, while the
    arm still moves a step per tick: the first POLICY command is one step from the newest pose
    read before it, not from the pose at the switch (that read 3 steps here)."""
    from qwen_vla_ros.embodiment.spec import load_embodiment
    from qwen_vla_ros.replay.summary import BagData, summarize

    spec = load_embodiment("aloha")
    step = spec.max_velocity() * spec.dt * np.eye(14)[0]
    data = BagData(time_base="sim time (/clock)", modes=[(0.5, "TELEOP"), (1.0, "POLICY")])
    for n in range(26, 53):  # t = 0.52 .. 1.04: the arm moves a step per tick
        data.measured.append((n * STEP, (n - 26) * step))
        if n <= 50:
            data.commands.append((n * STEP, (n - 25) * step))  # TELEOP leads by a step
    for n in range(53, 80):  # POLICY from t = 1.06: a step from the pose read at 1.04
        data.commands.append((n * STEP, (n - 26) * step))
    data.command_times = [t for t, _ in data.commands]
    assert summarize(data, spec)["handover"]["max_jump_over_step_limit"] == pytest.approx(1.0)
