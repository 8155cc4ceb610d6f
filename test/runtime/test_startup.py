"""The ALOHA start-up and sleep sequence (runtime/startup.py) against the sim's xs_sdk state
(sim/xs_sdk.py): the calls it makes, what a missing call does, and that every command of
start, teleop and sleep stays inside the URDF's limits."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_vla_ros.embodiment.robot_profile import load_profile
from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.runtime.interbotix import split_command
from qwen_vla_ros.runtime.limits import Limits
from qwen_vla_ros.runtime.observation import JointStateMerger
from qwen_vla_ros.runtime.startup import (
    Phase,
    StartupSequence,
    follower_setup_calls,
    joint_move,
)
from qwen_vla_ros.sim.aloha import ARM_JOINTS
from qwen_vla_ros.sim.xs_sdk import XsMotors

SPEC = load_embodiment("aloha")
LIMITS = Limits.from_spec(SPEC)
ROOT = Path(__file__).resolve().parents[2]


def urdf_limits() -> dict[str, tuple[float, float]]:
    import xacro

    root = ET.fromstring(xacro.process_file(str(ROOT / "urdf/aloha.urdf.xacro")).toxml())
    return {j.get("name"): (float(j.find("limit").get("lower")),
                            float(j.find("limit").get("upper")))
            for j in root.findall("joint") if j.find("limit") is not None}


URDF = urdf_limits()


def assert_inside_urdf(command: np.ndarray) -> None:
    """The interbotix commands built from ``command`` (arm rad, gripper motor rad) are inside
    the URDF joint limits of the joints they drive."""
    for arm in split_command(SPEC, command):
        side = arm.robot.split("_")[1]
        for joint, value in zip(ARM_JOINTS, arm.arm, strict=True):
            lo, hi = URDF[f"{side}_{joint}"]
            assert lo - 1e-9 <= value <= hi + 1e-9, (joint, value)
        lo, hi = URDF[f"{side}_gripper"]
        assert lo - 1e-9 <= arm.gripper <= hi + 1e-9, ("gripper", arm.gripper)


def run_calls(motors: dict[str, XsMotors], calls) -> None:
    for call in calls:
        assert motors[call.namespace].handle(call.service, call.fields) is None, call


def xs_robots() -> dict[str, XsMotors]:
    return {r: XsMotors(ARM_JOINTS) for r in
            ("follower_left", "follower_right", "leader_left", "leader_right")}


def test_setup_calls_make_the_gripper_take_radians():
    profile = load_profile("aloha_stationary")
    motors = xs_robots()
    assert isinstance(motors["follower_left"].gripper_angle("gripper", 1.0), str)
    calls = follower_setup_calls(profile, SPEC)
    assert [c.service for c in calls[:6]] == ["reboot_motors", "set_operating_modes",
                                              "set_operating_modes", "set_motor_registers",
                                              "torque_enable", "torque_enable"]
    run_calls(motors, calls)
    for r in ("follower_left", "follower_right"):
        assert motors[r].gripper_angle("gripper", 1.0) == 1.0
        assert motors[r].registers[("gripper", "current_limit")] == 300


def test_leaving_the_gripper_mode_switch_out_is_visible():
    """The sim reads a radian gripper command in linear_position as metres, like xs_sdk:
    without the mode switch the gripper does not follow, so a missing call fails tests."""
    profile = load_profile("aloha_stationary")
    motors = xs_robots()
    calls = [c for c in follower_setup_calls(profile, SPEC)
             if not (c.service == "set_operating_modes" and c.fields["name"] == "gripper")]
    run_calls(motors, calls)
    reason = motors["follower_left"].gripper_angle("gripper", 1.2)
    assert isinstance(reason, str) and "linear_position" in reason and "NaN" in reason


def test_joint_move_is_straight_bounded_and_ends_at_the_goal():
    start, goal = np.zeros(14), np.linspace(-1, 1, 14)
    wps = joint_move(start, goal, speed=0.4, dt=0.02)
    np.testing.assert_allclose(wps[-1], goal)
    steps = np.abs(np.diff(np.vstack([start, wps]), axis=0))
    assert steps.max() <= 0.4 * 0.02 + 1e-12
    assert len(joint_move(goal, goal, 0.4, 0.02)) == 1  # already there: one step


def drive(seq: StartupSequence, pose: np.ndarray, ticks: int) -> list[np.ndarray]:
    """Step the sequence with a robot that reaches each command (position control)."""
    sent, last = [], None
    for _ in range(ticks):
        cmd = seq.step(pose, last)
        if cmd is not None:
            sent.append(cmd)
            pose, last = cmd.copy(), cmd
    return sent


pose_strategy = st.lists(st.floats(0.0, 1.0), min_size=14, max_size=14).map(
    lambda u: SPEC.lower() + np.array(u) * (SPEC.upper() - SPEC.lower()))


@settings(max_examples=25, deadline=None)
@given(pose_strategy)
def test_start_then_sleep_from_any_pose_stays_inside_the_limits(pose):
    profile = load_profile("aloha_sim")
    seq = StartupSequence(profile, SPEC, LIMITS, SPEC.dt)
    seq.start()
    motors = xs_robots()
    while (call := seq.next_call()) is not None:
        seq.call_done(motors[call.namespace].handle(call.service, call.fields) is None)
    sent = drive(seq, pose, 2000)
    assert seq.phase is Phase.READY and seq.blocker() is None
    np.testing.assert_allclose(sent[-1], profile.start_pose(SPEC), atol=1e-9)
    seq.sleep(torque_off=False)
    sent_sleep = drive(seq, sent[-1], 4000)
    assert seq.phase is Phase.ASLEEP and "asleep" in seq.blocker()
    np.testing.assert_allclose(sent_sleep[-1], seq.sleep_pose, atol=1e-9)
    step = SPEC.max_velocity() * SPEC.dt + 1e-9
    path = np.vstack([pose, *sent, *sent_sleep])
    assert np.all(np.abs(np.diff(path, axis=0)) <= step)
    for cmd in [*sent, *sent_sleep]:
        assert_inside_urdf(cmd)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-4.0, 4.0), min_size=14, max_size=14), pose_strategy)
def test_teleop_commands_stay_inside_the_urdf_for_any_leader_pose(leader, start):
    """Leader readings (rad, even beyond any limit) -> the adapter's teleop path (leader
    merger, limit clamp from the last command) -> interbotix commands inside the URDF."""
    merger = JointStateMerger(SPEC, leaders=True)
    q = np.array(leader)
    for side, ns in (("left", "leader_left"), ("right", "leader_right")):
        k = 0 if side == "left" else 7
        merger.update(ns, [*ARM_JOINTS, "gripper"], list(q[k:k + 7]), 1.0)
    target = merger.state(1.0, 0.1)
    last = start
    for _ in range(400):
        cmd, _ = LIMITS.clamp(target, last, SPEC.dt)
        assert_inside_urdf(cmd)
        last = cmd


def test_a_failed_call_holds_and_names_the_service():
    profile = load_profile("aloha_stationary")
    seq = StartupSequence(profile, SPEC, LIMITS, SPEC.dt)
    seq.start()
    call = seq.next_call()
    seq.call_done(False, "service not available after 5 s")
    assert seq.phase is Phase.FAILED
    assert seq.step(np.zeros(14), None) is None  # nothing is sent
    assert call.describe().startswith("/follower_left/reboot_motors(") \
        and call.describe() in seq.blocker()
    seq.start()  # ~/start retries from the beginning
    assert seq.phase is Phase.CONFIGURING and seq.next_call() == call


def test_the_sleep_pose_beyond_the_urdf_stops_at_the_limits():
    seq = StartupSequence(load_profile("aloha_stationary"), SPEC, LIMITS, SPEC.dt)
    assert set(seq.sleep_clipped) >= {"left_shoulder", "left_elbow", "left_wrist_angle"}
    assert LIMITS.within(seq.sleep_pose)
    assert seq.sleep_pose[1] == pytest.approx(SPEC.dim("left_shoulder").lower)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.floats(-6.0, 6.0), min_size=14, max_size=14), min_size=1,
                max_size=4), pose_strategy, st.sampled_from(["ensemble", "rtc"]))
def test_policy_commands_stay_inside_the_urdf_for_any_chunk(rows, start, blend):
    """Chunks with any values (far beyond the limits too) -> the adapter's executor, from the
    measured pose at the handover -> interbotix commands inside the URDF."""
    from qwen_vla_ros.runtime.executor import Chunk, ChunkExecutor

    ex = ChunkExecutor(LIMITS, SPEC.dt, mode=blend)
    ex.reset(start)
    actions = np.repeat(np.array(rows), 10, axis=0)  # [H, 14]
    ex.add_chunk(Chunk(actions, 0.0, SPEC.dt))
    for k in range(len(actions) + 20):
        cmd = ex.step(k * SPEC.dt)
        if cmd is not None:
            assert_inside_urdf(cmd.position)
