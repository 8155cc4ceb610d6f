"""Chunk executor: latency skip, blending, clamping, hold; property tests on the limits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.runtime.executor import Chunk, ChunkExecutor, RejectedChunk
from qwen_vla_ros.runtime.limits import Limits

DT = 0.02
LIM = Limits(lower=np.array([-1.0, -1.0]), upper=np.array([1.0, 1.0]),
             max_velocity=np.array([10.0, 10.0]))


def ramp(n=50, start=0.0, slope=0.01):
    k = np.arange(n)[:, None]
    return np.hstack([start + slope * k, -(start + slope * k)])


def test_skips_steps_whose_time_has_passed():
    ex = ChunkExecutor(LIM, DT)
    ex.reset(np.array([0.07, -0.07]))
    ex.add_chunk(Chunk(ramp(), stamp=100.0, dt=DT))
    cmd = ex.step(100.0 + 7 * DT)  # 7 steps of latency: action 7 is due now
    np.testing.assert_allclose(cmd.position, [0.07, -0.07])
    assert cmd.source == "chunk"


def test_holds_last_command_when_chunk_runs_out_and_never_extrapolates():
    ex = ChunkExecutor(LIM, DT)
    ex.reset(np.zeros(2))
    ex.add_chunk(Chunk(ramp(n=5), stamp=0.0, dt=DT))
    last = None
    for k in range(5):
        last = ex.step(k * DT)
    held = ex.step(10 * DT)
    assert held.source == "hold"
    np.testing.assert_array_equal(held.position, last.position)


def test_no_chunk_is_executed_before_a_pose_is_known():
    ex = ChunkExecutor(LIM, DT)
    ex.add_chunk(Chunk(np.full((5, 2), 0.9), stamp=0.0, dt=DT))
    assert ex.step(0.0) is None  # no pose to limit the first step against: hold
    ex.reset(np.zeros(2))
    ex.add_chunk(Chunk(np.full((5, 2), 0.9), stamp=0.0, dt=DT))
    np.testing.assert_allclose(ex.step(0.0).position, [0.2, 0.2])  # one velocity step


@pytest.mark.parametrize("bad", [np.full((5, 2), np.nan), np.full((5, 2), np.inf),
                                 np.zeros((5, 3)), np.zeros((0, 2))])
def test_bad_chunks_rejected_and_robot_holds(bad):
    ex = ChunkExecutor(LIM, DT)
    ex.reset(np.array([0.2, 0.3]))
    with pytest.raises(RejectedChunk):
        ex.add_chunk(Chunk(bad, stamp=0.0, dt=DT))
    cmd = ex.step(0.0)
    assert cmd.source == "hold"
    np.testing.assert_array_equal(cmd.position, [0.2, 0.3])


def test_temporal_ensembling_averages_overlapping_chunks():
    ex = ChunkExecutor(LIM, DT, mode="ensemble", ensemble_decay=0.0)
    ex.reset(np.array([0.2, 0.2]))
    ex.add_chunk(Chunk(np.full((50, 2), 0.1), stamp=0.0, dt=DT))
    ex.add_chunk(Chunk(np.full((50, 2), 0.3), stamp=5 * DT, dt=DT))
    cmd = ex.step(6 * DT)
    assert cmd.chunks_used == 2
    np.testing.assert_allclose(cmd.position, [0.2, 0.2])


def test_rtc_follows_newest_chunk_and_fades_in_when_it_had_no_prefix():
    ex = ChunkExecutor(LIM, DT, mode="rtc", blend_steps=4)
    ex.reset(np.array([0.1, 0.1]))
    ex.add_chunk(Chunk(np.full((50, 2), 0.1), stamp=0.0, dt=DT))
    ex.step(0.0)
    ex.add_chunk(Chunk(np.full((50, 2), 0.5), stamp=DT, dt=DT, prefix_len=0))
    seen = [ex.step(k * DT).position[0] for k in range(1, 8)]
    assert all(b >= a for a, b in itertools.pairwise(seen)), seen
    assert seen[0] < 0.5 and seen[-1] == pytest.approx(0.5)
    ex.add_chunk(Chunk(np.full((50, 2), 0.7), stamp=8 * DT, dt=DT, prefix_len=3))
    assert ex.step(8 * DT).position[0] == pytest.approx(0.7)  # prefix-sampled: no fade


def test_committed_prefix_comes_from_the_schedule():
    ex = ChunkExecutor(LIM, DT, mode="rtc")
    ex.add_chunk(Chunk(ramp(), stamp=1.0, dt=DT))
    prefix = ex.committed(1.0 + 10 * DT, 5)
    np.testing.assert_allclose(prefix[:, 0], [0.10, 0.11, 0.12, 0.13, 0.14])
    assert ex.committed(1.0 + 48 * DT, 5) is None  # runs past the chunk


def test_position_limits_from_the_aloha_spec_are_enforced():
    spec = load_embodiment("aloha")
    ex = ChunkExecutor(Limits.from_spec(spec), spec.dt)
    ex.reset(np.zeros(14))
    far = np.tile(spec.upper() + 1.0, (50, 1))
    for k in range(400):
        cmd = ex.step(k * spec.dt) if k else (ex.add_chunk(Chunk(far, 0.0, spec.dt)) or
                                               ex.step(0.0))
    assert np.all(cmd.position <= spec.upper() + 1e-12)


@settings(max_examples=200, deadline=None)
@given(chunk=arrays(np.float64, (20, 2), elements=st.floats(-5, 5)),
       start=arrays(np.float64, (2,), elements=st.floats(-1, 1)),
       latency=st.integers(0, 25))
def test_commands_stay_in_limits_and_within_one_velocity_step(chunk, start, latency):
    ex = ChunkExecutor(LIM, DT)
    ex.reset(start)
    ex.add_chunk(Chunk(chunk, stamp=0.0, dt=DT))
    prev = start
    for k in range(latency, latency + 30):
        cmd = ex.step(k * DT)
        assert np.all(np.isfinite(cmd.position))
        assert LIM.within(cmd.position)
        assert np.all(np.abs(cmd.position - prev) <= LIM.max_velocity * DT + 1e-9)
        prev = cmd.position


def test_looking_ahead_does_not_drop_the_running_chunk():
    ex = ChunkExecutor(LIM, DT)
    ex.reset(np.zeros(2))
    ex.add_chunk(Chunk(ramp(n=50), stamp=0.0, dt=DT))
    for k in range(45):
        ex.planned(k * DT + 0.5)  # a ghost display 0.5 s ahead
        assert ex.step(k * DT).source == "chunk", f"chunk dropped at step {k}"
