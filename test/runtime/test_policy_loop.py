"""PolicyLoop: the per-tick logic shared by policy_node and offline replay."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.model.policy import ActionChunk
from qwen_vla_ros.runtime.observation import Rejection
from qwen_vla_ros.runtime.policy_loop import PolicyLoop


@pytest.fixture
def loop():
    spec = load_embodiment("vx300s_single")
    lp = PolicyLoop(spec, max_age=0.2, seed=10, instruction="pick")
    names = [d.joint for d in spec.action]
    lp.add_joint_state("", names, [0.1] * len(names), 1.00)
    for cam in spec.cameras:
        lp.add_image(cam, np.zeros((8, 8, 3), np.uint8), 1.05)
    return lp


def chunk_for(loop, req, value=0.0):
    spec = loop.spec
    return ActionChunk(np.full((spec.horizon, spec.action_dim), value), spec.name,
                       req.observation.stamp, spec.dt)


def test_request_records_inputs_and_oldest_stamp(loop):
    req = loop.request(1.1)
    assert not isinstance(req, Rejection)
    assert req.observation.stamp == 1.00 and req.age == pytest.approx(0.1)
    assert req.inputs == {"cam_high": 1.05, "cam_wrist": 1.05, "joint_states:robot": 1.00}
    info = req.info(steps=10)
    assert info["seed"] == 10 and info["embodiment"] == "vx300s_single"


def test_seed_advances_only_on_accepted_chunks(loop):
    req = loop.request(1.1)
    assert loop.accept(req, chunk_for(loop, req, np.nan)) is not None  # NaN: dropped
    assert loop.request(1.1).seed == 10
    assert loop.accept(req, chunk_for(loop, req)) is None
    assert loop.request(1.1).seed == 11


def test_a_chunk_the_schedule_refuses_is_a_reason_not_an_exception(loop):
    req = loop.request(1.1)
    assert loop.accept(req, chunk_for(loop, req)) is None
    spec = loop.spec
    older = ActionChunk(np.zeros((spec.horizon, spec.action_dim)), spec.name, 0.5, spec.dt)
    reason = loop.accept(req, older)  # observed before the chunk already accepted
    assert reason and reason.startswith("chunk rejected") and loop.accepted == 1


def test_stale_and_missing_inputs_are_rejections(loop):
    assert "stale" in str(loop.request(1.3))
    assert loop.set_instruction("  ") is not None and loop.instruction == "pick"
    assert loop.instructions_ignored == 1
    empty = PolicyLoop(loop.spec, max_age=0.2)
    assert "no instruction" in str(empty.request(0.0))
    with pytest.raises(ValueError):
        PolicyLoop(loop.spec, max_age=0.0)


def test_measured_delay_sets_the_prefix_and_the_tag(loop):
    from qwen_vla_ros.runtime.policy_loop import PolicyLoop

    spec = loop.spec
    lp = PolicyLoop(spec, max_age=0.5, seed=0, prefix_steps=-1, instruction="pick")
    names = [d.joint for d in spec.action]
    t = 1.0
    for i in range(4):
        lp.add_joint_state("", names, [0.1] * len(names), t)
        for cam in spec.cameras:
            lp.add_image(cam, np.zeros((8, 8, 3), np.uint8), t)
        req = lp.request(t + 0.01)
        # nothing measured before the first chunk: no prefix; then 0.13 s = 7 steps of 20 ms,
        # plus the margin
        assert req.delay_steps == (0 if i == 0 else 9)
        assert (req.prefix is None) == (i == 0)
        assert i == 0 or len(req.prefix) == 9
        assert lp.accept(req, chunk_for(lp, req), now=t + 0.13) is None
        assert lp.delay_change == ((0, 9) if i == 0 else None)  # the node logs a change
        assert lp.last_tag.id == i and lp.last_tag.delay == req.delay_steps
        assert lp.last_tag.prefix == (0 if req.prefix is None else len(req.prefix))
        t += 0.2


@pytest.mark.parametrize("soft", [0, 5, -1])
def test_soft_guidance_asks_for_what_the_previous_chunk_planned_after_the_prefix(soft):
    spec = load_embodiment("vx300s_single")
    lp = PolicyLoop(spec, max_age=0.5, prefix_steps=3, soft_steps=soft, instruction="pick")
    names = [d.joint for d in spec.action]

    def feed(t):
        lp.add_joint_state("", names, [0.1] * len(names), t)
        for cam in spec.cameras:
            lp.add_image(cam, np.zeros((8, 8, 3), np.uint8), t)

    feed(1.0)
    req = lp.request(1.01)
    ramp = 0.1 + 1e-4 * np.arange(spec.horizon)[:, None] * np.ones(spec.action_dim)
    assert req.guide is None  # nothing planned yet
    assert lp.accept(req, ActionChunk(ramp, spec.name, 1.0, spec.dt)) is None
    feed(1.0 + 5 * spec.dt)  # 5 steps into that chunk
    req = lp.request(1.0 + 5 * spec.dt + 0.01)
    np.testing.assert_array_equal(req.prefix, ramp[5:8])
    expected = {0: None, 5: ramp[8:13], -1: ramp[8:]}[soft]  # -1: all the chunk still plans
    if expected is None:
        assert req.guide is None and req.info(10)["guide_len"] == 0
    else:
        np.testing.assert_array_equal(req.guide, expected)
        assert req.info(10)["guide_len"] == len(expected)


def test_delay_estimate_is_a_high_percentile_in_steps_clamped_to_the_horizon():
    from qwen_vla_ros.runtime.inference import DelayEstimator

    est = DelayEstimator(dt=0.02, horizon=50, window=10)
    assert est.steps == 0
    assert est.add(0.05) and est.steps == 3 + 2  # 2.5 steps -> 3, and the margin
    for _ in range(8):
        est.add(0.05)
    assert not est.add(0.5)  # one slow chunk in ten is above the p90
    assert est.add(0.5) and est.steps == 25 + 2  # two are the p90
    assert not est.add(float("nan")) and est.steps == 27
    assert not est.add(-0.1)  # a clock that went back is not a measurement
    for _ in range(3):
        est.add(10.0)
    assert est.steps == 49  # clamped below the horizon
    with pytest.raises(ValueError):
        DelayEstimator(dt=0.0, horizon=50)
    with pytest.raises(ValueError):
        DelayEstimator(dt=0.02, horizon=50, patience=0)


def test_delay_estimate_rises_at_once_and_falls_only_after_patience():
    """A latency on the edge of a control step must not flip the prefix at every chunk: a
    longer delay is taken at once, a shorter one after ``patience`` lower estimates in a row."""
    from qwen_vla_ros.runtime.inference import DelayEstimator

    est = DelayEstimator(dt=0.02, horizon=50, window=1, patience=3)
    assert est.add(0.10) and est.steps == 5 + 2
    changes = [est.add(t) for t in (0.079, 0.10) * 3]  # 4 or 5 steps, alternating
    assert not any(changes) and est.steps == 7
    assert not est.add(0.05) and not est.add(0.07)
    assert est.add(0.05) and est.steps == 4 + 2  # three lower in a row: the largest of them
    assert est.add(0.2) and est.steps == 10 + 2  # longer: at once


def test_fixed_noise_samples_every_chunk_from_the_base_seed(loop):
    from qwen_vla_ros.runtime.policy_loop import PolicyLoop

    fixed = PolicyLoop(loop.spec, max_age=0.2, seed=10, instruction="pick", fixed_noise=True)
    for lp in (loop, fixed):
        names = [d.joint for d in lp.spec.action]
        lp.add_joint_state("", names, [0.1] * len(names), 1.00)
        for cam in lp.spec.cameras:
            lp.add_image(cam, np.zeros((8, 8, 3), np.uint8), 1.05)
        seeds = []
        for _ in range(3):
            req = lp.request(1.1)
            seeds.append(req.seed)
            assert lp.accept(req, chunk_for(lp, req)) is None
        assert seeds == ([10, 10, 10] if lp is fixed else [10, 11, 12])


def test_a_paced_request_waits_for_what_the_sim_published_for_its_clock(loop):
    """awaiting(now): joint states stamped before ``now`` (the sim publishes them every
    step) and a camera whose next frame, at its last rate, was due by ``now``; a stale input
    is not waited for (the request rejects it)."""
    names = [d.joint for d in loop.spec.action]
    assert loop.awaiting(1.0) == []  # joint states of 1.00 arrived; one frame: no rate yet
    assert loop.awaiting(1.02) == ["joint_states:robot"]
    loop.add_joint_state("", names, [0.1] * len(names), 1.02)
    assert loop.awaiting(1.02) == []
    for cam in loop.spec.cameras:
        loop.add_image(cam, np.zeros((8, 8, 3), np.uint8), 1.15)  # 0.1 s after the last
    loop.add_joint_state("", names, [0.1] * len(names), 1.25)
    assert loop.awaiting(1.24) == []
    assert loop.awaiting(1.25) == ["cam_high", "cam_wrist"]  # due at 1.25, not yet here
    loop.add_image("cam_high", np.zeros((8, 8, 3), np.uint8), 1.25)
    assert loop.awaiting(1.25) == ["cam_wrist"]
    assert loop.awaiting(1.6) == []  # everything stale: the request says so instead
    assert "stale" in str(loop.request(1.6))


def test_a_restart_drops_the_plan_and_earlier_answers_and_restarts_the_seeds(loop):
    """policy_node restarts its loop at each activation: the adapter engages from the
    measured pose, so the old plan must not become a prefix, an answer to a request from
    before is not published, and chunk seeds start from ``seed`` again (a run repeats)."""
    loop.prefix_steps = 3
    first = loop.request(1.1)
    assert first.seed == 10 and loop.accept(first, chunk_for(loop, first), now=1.15) is None
    again = loop.request(1.1)
    assert again.seed == 11 and again.prefix is not None  # continuing the plan
    loop.restart(1.12)
    fresh = loop.request(1.12)
    assert fresh.seed == 10 and fresh.prefix is None and len(loop.schedule.chunks) == 0
    reason = loop.accept(again, chunk_for(loop, again), now=1.2)
    assert reason and "before the restart" in reason and loop.accepted == 1
    assert loop.accept(fresh, chunk_for(loop, fresh), now=1.2) is None
    assert loop.last_tag.id == 1 and loop.last_tag.sent == 1.2  # ids go on; sent: its clock
    assert loop.request(1.12).seed == 11
