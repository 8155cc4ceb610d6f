"""Chunk executor: latency skip, blending, clamping, hold; property tests on the limits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.runtime.executor import (
    Chunk,
    ChunkExecutor,
    ChunkTag,
    PrefixMismatch,
    RejectedChunk,
    StaleChunk,
    execution_stats,
)
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
    cont = np.full((50, 2), 0.7)
    cont[:3] = 0.5  # sampled continuing the committed 3 steps
    ex.add_chunk(Chunk(cont, stamp=8 * DT, dt=DT, prefix_len=3))
    assert [ex.step(k * DT).position[0] for k in range(8, 11)] == pytest.approx([0.5] * 3)
    assert ex.step(11 * DT).position[0] == pytest.approx(0.7)  # prefix-sampled: no fade


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


@settings(max_examples=300, deadline=None)
@given(target=arrays(np.float64, (2,), elements=st.floats(-5, 5)),
       previous=arrays(np.float64, (2,), elements=st.floats(-3, 3)))
def test_a_command_never_leaves_the_box_even_from_a_pose_outside_it(target, previous):
    """A handover from a measured pose past a joint limit: the command goes to the box's edge
    (not past it); from inside the box it also moves at most one velocity step."""
    cmd, _ = LIM.clamp(target, previous, DT)
    assert LIM.within(cmd, tol=0.0)
    if LIM.within(previous, tol=0.0):
        assert np.all(np.abs(cmd - previous) <= LIM.max_velocity * DT + 1e-12)
    else:  # no nearer to the target than one step allows, and at the edge on the far dims
        out = (previous < LIM.lower) | (previous > LIM.upper)
        assert np.all(np.isin(cmd[out], [-1.0, 1.0]) | (np.abs(cmd[out] - previous[out])
                                                         <= LIM.max_velocity[out] * DT))


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


def test_naive_switches_to_the_newest_chunk_at_once():
    ex = ChunkExecutor(LIM, DT, mode="naive")
    ex.reset(np.array([0.1, 0.1]))
    ex.add_chunk(Chunk(np.full((50, 2), 0.1), stamp=0.0, dt=DT))
    ex.step(0.0)
    ex.add_chunk(Chunk(np.full((50, 2), 0.12), stamp=DT, dt=DT))
    assert ex.step(DT).position[0] == pytest.approx(0.12)  # no fade, no averaging
    assert ex.step(2 * DT).chunks_used == 1


def test_rtc_chunk_must_continue_the_planned_prefix():
    ex = ChunkExecutor(LIM, DT, mode="rtc", blend_steps=4)
    ex.reset(np.zeros(2))
    ex.add_chunk(Chunk(ramp(), stamp=0.0, dt=DT, id=0))
    for k in range(5):
        ex.step(k * DT)
    good = ramp(start=0.05)  # what chunk 0 plans from step 5 on, then its own plan
    good[3:] = 0.3
    ex.add_chunk(Chunk(good, stamp=5 * DT, dt=DT, prefix_len=3, id=1), now=5 * DT)
    assert ex.step(5 * DT).position[0] == pytest.approx(0.05)  # the prefix, not faded
    plan_before = [ex.planned(t * DT)[0].copy() for t in range(6, 40)]
    bad = good.copy()
    bad[:3] += 0.01  # planned against something else
    with pytest.raises(PrefixMismatch):
        ex.add_chunk(Chunk(bad, stamp=6 * DT, dt=DT, prefix_len=3, id=2), now=6 * DT)
    # the current plan continues untouched
    np.testing.assert_array_equal(plan_before, [ex.planned(t * DT)[0] for t in range(6, 40)])


def test_chunk_arriving_after_its_horizon_is_refused():
    ex = ChunkExecutor(LIM, DT)
    ex.reset(np.zeros(2))
    with pytest.raises(StaleChunk):
        ex.add_chunk(Chunk(ramp(n=10), stamp=0.0, dt=DT), now=10 * DT)
    ex.add_chunk(Chunk(ramp(n=10), stamp=0.0, dt=DT), now=9 * DT)  # its last action is due
    assert ex.step(9 * DT).source == "chunk"


def test_chunk_tag_round_trip_and_malformed_tags():
    tag = ChunkTag(12, 4, 5)
    assert ChunkTag.parse(tag.text()) == tag
    sent = ChunkTag(13, 4, 5, 1234.56789)
    assert ChunkTag.parse(sent.text()) == sent and "sent=1234.567890000" in sent.text()
    assert ChunkTag.parse("") is None and ChunkTag.parse("base_link") is None
    for bad in ("qvr_chunk id=1 prefix=2", "qvr_chunk id=x prefix=1 delay=1",
                "qvr_chunk id=1 prefix=-1 delay=0", "qvr_chunk id=1 prefix=1 delay=0 sent=x",
                "qvr_chunk id=1 prefix=1 delay=0 sent=nan"):
        with pytest.raises(ValueError, match="malformed chunk tag"):
            ChunkTag.parse(bad)


def _inputs(loop, t):
    spec = loop.spec
    loop.add_joint_state("", [d.joint for d in spec.action], [0.0] * spec.action_dim, t)
    for cam in spec.cameras:
        loop.add_image(cam, np.zeros((4, 4, 3), np.uint8), t)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(3, 12),
       drop=st.sampled_from([None, 1, 2]), swap=st.booleans())
def test_rtc_schedule_matches_the_policys_and_never_alters_a_committed_prefix(seed, n, drop,
                                                                              swap):
    """A policy loop with the measured delay samples chunks continuing its committed prefix;
    an rtc executor receives them after random latencies, possibly one lost (``drop``) or two
    swapped in transit (``swap``). Whatever it accepts continues its plan exactly, its
    schedule equals the policy's while nothing is lost, and every command is one bounded
    step from the previous one."""
    from qwen_vla_ros.model.types import ActionChunk
    from qwen_vla_ros.runtime.policy_loop import PolicyLoop

    rng = np.random.default_rng(seed)
    spec = load_embodiment("vx300s_single")
    lim = Limits.from_spec(spec)
    loop = PolicyLoop(spec, max_age=0.5, prefix_steps=-1, instruction="pick")
    ex = ChunkExecutor(lim, spec.dt, mode="rtc")
    ex.reset(np.clip(np.zeros(spec.action_dim), lim.lower, lim.upper))
    t, sent = 0.0, []
    for _ in range(n):  # the policy side: observation, inference latency, publication
        _inputs(loop, t)
        req = loop.request(t + 0.01)
        rest = rng.uniform(lim.lower, lim.upper, (spec.horizon, spec.action_dim)) * 0.2
        k = 0 if req.prefix is None else len(req.prefix)
        if k:
            rest[:k] = req.prefix
        latency = float(rng.uniform(0.03, 0.3))
        assert loop.accept(req, ActionChunk(rest, spec.name, t, spec.dt), now=t + latency) \
            is None
        tag = loop.last_tag
        assert tag.prefix == k and tag.delay == req.delay_steps
        sent.append((t + latency, Chunk(rest, t, spec.dt, tag.prefix, tag.id)))
        t += latency + float(rng.uniform(0.0, 0.1))
    arrivals = [c for c in sent if drop is None or c[1].id != drop]
    if swap and len(arrivals) > 3:
        arrivals[2], arrivals[3] = arrivals[3], arrivals[2]
    now, prev, lost = 0.0, ex.last_command.copy(), drop is not None or swap
    for at, chunk in arrivals:  # the adapter side, ticking at the control rate
        while now + spec.dt <= at:
            now += spec.dt
            cmd = ex.step(now)
            assert np.all(np.abs(cmd.position - prev) <= lim.max_velocity * spec.dt + 1e-9)
            prev = cmd.position
        span = [chunk.stamp + j * spec.dt for j in range(chunk.prefix_len)]
        before = [ex.planned(s)[0] for s in span]
        try:
            ex.add_chunk(chunk, now=now)
        except RejectedChunk:
            assert lost, "a chunk was refused although every chunk arrived in order"
            continue
        for s, b in zip(span, before, strict=True):  # a committed prefix is never altered
            if b is not None:
                np.testing.assert_allclose(ex.planned(s)[0], b, atol=1e-9)
    if not lost:  # the adapter runs exactly the policy's schedule
        for j in range(60):
            s = now + j * spec.dt
            a, b = ex.planned(s)[0], loop.schedule.planned(s)[0]
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(a, b, atol=1e-9)


@pytest.mark.parametrize("mode", ["naive", "ensemble", "rtc"])
def test_a_chunk_runs_only_at_ticks_after_the_clock_reading_it_was_sent_at(mode):
    """A simulated tick and a chunk can share a clock reading: whether the tick ran first
    would follow message timing. Either order gives the same commands: the chunk runs from
    the next tick."""
    def run(chunk_first: bool | None) -> list[np.ndarray]:
        """chunk_first None: the new chunk never comes."""
        ex = ChunkExecutor(LIM, DT, mode=mode)
        ex.reset(np.zeros(2))
        ex.add_chunk(Chunk(np.full((20, 2), 0.01), stamp=0.0, dt=DT, sent=0.0), now=0.0)
        out = [ex.step(k * DT).position for k in range(1, 5)]
        new = Chunk(np.full((20, 2), 0.05), stamp=4 * DT, dt=DT, sent=5 * DT)
        if chunk_first:
            ex.add_chunk(new, now=5 * DT)
        out.append(ex.step(5 * DT).position)  # the tick at the reading the chunk was sent at
        if chunk_first is False:
            ex.add_chunk(new, now=5 * DT)
        return out + [ex.step(k * DT).position for k in range(6, 9)]

    first, after, without = (np.array(run(c)) for c in (True, False, None))
    np.testing.assert_array_equal(first, after)
    np.testing.assert_array_equal(first[:5], without[:5])  # the old plan up to that tick
    assert np.all(first[5] > without[5])  # then the new one
    ex = ChunkExecutor(LIM, DT, mode=mode)
    ex.reset(np.zeros(2))
    ex.add_chunk(Chunk(np.full((20, 2), 0.01), stamp=0.0, dt=DT, sent=2 * DT), now=2 * DT)
    assert ex.step(2 * DT).source == "hold" and ex.step(3 * DT).source == "chunk"


def _traced(chunks, ticks):
    """A naive executor from 0 that receives ``chunks`` ({tick: Chunk}) and runs ``ticks``."""
    ex = ChunkExecutor(LIM, DT, mode="naive")
    ex.reset(np.zeros(2))
    ex.trace = []
    for k in range(ticks):
        if k in chunks:
            ex.add_chunk(chunks[k])
        ex.step(k * DT)
    return ex.trace


def test_execution_stats_find_boundary_jumps_jerk_and_holding():
    limit = LIM.max_velocity * DT  # 0.2 per step
    trace = _traced({0: Chunk(np.zeros((10, 2)), stamp=0.0, dt=DT),
                     5: Chunk(np.full((5, 2), 0.5), stamp=5 * DT, dt=DT)}, 14)
    s = execution_stats(trace, limit, DT)  # asked to jump 0.5, then 4 ticks holding
    assert s["boundaries"] == 1
    assert s["boundary_jump_max"] == pytest.approx(2.5)  # asked 0.5 of a 0.2 step
    assert s["inner_step_max"] == 0.0 and s["inner_steps"] == 4 + 4  # constant chunks
    ramp = np.zeros((10, 2))
    ramp[:, 1] = 0.1 * np.arange(10)  # dimension 1 moves half a step limit per step
    r = execution_stats(_traced({0: Chunk(ramp, 0.0, DT), 5: Chunk(np.zeros((5, 2)), 5 * DT,
                                                                    DT)}, 9),
                        limit, DT)
    assert r["inner_step_max"] == pytest.approx(0.5) and r["inner_step_dim"] == 1
    assert r["boundary_jump_dim"] == 1  # from 0.4 back to 0: 2 step limits
    assert r["boundary_jump_max"] == pytest.approx(2.0)
    # A plan faster than the limit (0.5 per step of 0.2), continued exactly by the next chunk:
    # the commands lag ever further behind, but the switch itself asks for no more than the
    # plan's own step.
    fast = np.zeros((20, 2))
    fast[:, 0] = 0.5 * np.arange(20)
    r = execution_stats(_traced({0: Chunk(fast[:10], 0.0, DT),
                                 5: Chunk(fast[5:15], 5 * DT, DT)}, 12), limit, DT)
    assert r["boundaries"] == 1 and r["boundary_jump_max"] == pytest.approx(2.5)
    assert r["inner_step_max"] == pytest.approx(2.5) and r["boundary_jump_dim"] == 0
    assert s["hold_s"] == pytest.approx(4 * DT)
    assert s["jerk_rms"] > 0
    s = execution_stats(_traced({0: Chunk(np.zeros((10, 2)), stamp=0.0, dt=DT)}, 10), limit,
                        DT)
    assert s["boundaries"] == 0 and s["boundary_jump_max"] is None
    assert s["jerk_rms"] == 0.0 and s["hold_s"] == 0.0
