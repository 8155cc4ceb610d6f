"""Observation assembly: joint states merged by name, grippers normalised once, staleness."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.runtime.modes import Mode, ModeMachine
from qwen_vla_ros.runtime.observation import ImageBuffer, JointStateMerger, Rejection

ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]
XS_NAMES = [*ARM, "gripper", "left_finger", "right_finger"]  # interbotix joint_states order


def test_merges_two_arms_by_name_in_any_order():
    spec = load_embodiment("aloha")
    m = JointStateMerger(spec)
    assert m.robots() == ["follower_left", "follower_right"]
    # The follower gripper is observed as its finger slide (m), as ALOHA datasets record it:
    # the motor angle in the same message is not what the state holds.
    left = {n: 0.1 * i for i, n in enumerate(ARM)} | {"gripper": 0.0, "left_finger": 0.0579,
                                                       "right_finger": -0.0579}
    right = {n: -0.1 * i for i, n in enumerate(ARM)} | {"gripper": 1.6214, "left_finger": 0.0440}
    names = list(reversed(XS_NAMES))
    assert m.update("follower_left", names, [left[n] for n in names], 10.0) is None
    names_r = [*ARM, "left_finger", "gripper"]
    assert m.update("follower_right", names_r, [right[n] for n in names_r], 10.0) is None
    q = m.state(10.01, 0.1)
    np.testing.assert_allclose(q[:6], [0.1 * i for i in range(6)])
    assert q[6] == pytest.approx(1.0)  # finger open (0.0579 m) -> normalised 1
    np.testing.assert_allclose(q[7:13], [-0.1 * i for i in range(6)])
    assert q[13] == pytest.approx(0.0)  # finger closed (0.0440 m) -> 0


def test_rejections_name_the_problem():
    spec = load_embodiment("aloha")
    m = JointStateMerger(spec)
    assert "none of the expected joints" in m.update("follower_left", ["knee"], [0.0], 0.0)
    reason = m.update("follower_left", ARM, [0, np.nan, 0, 0, 0, 0], 0.0)
    assert "non-finite positions for ['shoulder']" in reason
    assert "2 names but 1 positions" in m.update("follower_left", ["a", "b"], [0.0], 0.0)
    missing = m.state(0.0, 1.0)
    assert isinstance(missing, Rejection) and "left_waist" in missing.reason
    m.update("follower_left", XS_NAMES, [0.0] * 9, 0.0)
    m.update("follower_right", XS_NAMES, [0.0] * 9, 0.0)
    assert not isinstance(m.state(0.0, 0.1), Rejection)
    m.update("follower_right", ["elbow"], [np.inf], 0.01)  # garbage now invalidates at once
    invalid = m.state(0.01, 0.1)
    assert isinstance(invalid, Rejection) and "right_elbow" in invalid.reason
    m.update("follower_right", ["elbow"], [0.0], 0.0)
    stale = m.state(0.5, 0.1)
    assert isinstance(stale, Rejection) and "stale" in stale.reason and "500 ms" in stale.reason


def test_image_buffer_missing_and_stale():
    buf = ImageBuffer(["cam_high", "cam_low"])
    img = np.zeros((4, 4, 3), np.uint8)
    buf.put("cam_high", img, 1.0)
    assert "cam_low" in buf.images(1.0, 0.1).reason
    buf.put("cam_low", img, 1.0)
    assert set(buf.images(1.05, 0.1)) == {"cam_high", "cam_low"}
    assert "stale" in buf.images(1.2, 0.1).reason
    with pytest.raises(KeyError, match="unknown camera 'cam_side'"):
        buf.put("cam_side", img, 1.0)


def test_mode_machine_records_transitions():
    mm = ModeMachine()
    assert mm.mode is Mode.HOLD
    assert mm.request("teleop", 1.0) and mm.request(Mode.POLICY, 2.0)
    assert not mm.request("POLICY", 3.0)
    assert [(t.previous, t.mode) for t in mm.history] == [(Mode.HOLD, Mode.TELEOP),
                                                          (Mode.TELEOP, Mode.POLICY)]
    with pytest.raises(ValueError, match="unknown mode 'dance'"):
        mm.request("dance", 4.0)


def test_leader_view_uses_leader_namespaces_and_gripper_range():
    spec = load_embodiment("aloha")
    leaders = JointStateMerger(spec, leaders=True)
    assert leaders.robots() == ["leader_left", "leader_right"]
    for robot in ("leader_left", "leader_right"):
        assert leaders.update(robot, [*ARM, "gripper"], [0.0] * 6 + [0.8298], 1.0) is None
    q = leaders.state(1.0, 0.1)
    assert q[6] == pytest.approx(1.0) and q[13] == pytest.approx(1.0)  # leader open -> 1
    # ROS 2 leader range (Interbotix/aloha LEADER_GRIPPER_JOINT_CLOSE/OPEN): -0.0552 -> 0
    leaders.update("leader_left", ["gripper"], [-0.0552], 1.0)
    assert leaders.state(1.0, 0.1)[6] == pytest.approx(0.0)


def test_split_command_into_interbotix_arm_and_gripper():
    from qwen_vla_ros.runtime.interbotix import split_command

    spec = load_embodiment("aloha")
    cmd = np.arange(14, dtype=float) / 10
    cmd[6], cmd[13] = 1.0, 0.0
    left, right = split_command(spec, cmd)
    assert left.robot == "follower_left" and left.group == "arm"
    np.testing.assert_allclose(left.arm, cmd[:6])
    # ROS 2 follower motor angle (FOLLOWER_GRIPPER_JOINT_OPEN / _CLOSE)
    assert left.gripper_joint == "gripper" and left.gripper == pytest.approx(1.6214)
    np.testing.assert_allclose(right.arm, cmd[7:13])
    assert right.gripper == pytest.approx(0.6197)
    with pytest.raises(ValueError, match="NaN"):
        split_command(spec, np.full(14, np.nan))


def test_embodiment_without_measured_state_gives_an_empty_state():
    spec = load_embodiment("diff_drive_base")
    m = JointStateMerger(spec)
    assert m.robots() == [] and m.state(5.0, 0.1).shape == (0,)
    assert m.oldest_stamp() == float("inf")
