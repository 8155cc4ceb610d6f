"""Robot profiles (config/robots/) and gripper units against the upstream Interbotix facts.

The expected numbers are written out here from the upstream sources (Interbotix/aloha
aloha/constants.py and config/robot/*.yaml, branches main and 2.0; interbotix_ros_manipulators
aloha_vx300s.yaml), not read from our files, so a wrong constant in a YAML fails."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qwen_vla_ros.embodiment.gripper import GripperMap, leader_to_follower
from qwen_vla_ros.embodiment.robot_profile import available_profiles, input_topics, load_profile
from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.errors import ConfigError

START_ARM_POSE = [0.0, -0.96, 1.16, 0.0, -0.3, 0.0]
SLEEP_POSE = [0.0, -2.05, 1.7, 0.0, -2.0, 0.0]  # aloha_vx300s.yaml sleep_positions (jazzy)


def test_ros2_gripper_constants():
    spec = load_embodiment("aloha")
    for name in ("left_gripper", "right_gripper"):
        g = spec.dim(name).gripper
        assert (g.closed, g.open) == (0.6197, 1.6214)  # FOLLOWER_GRIPPER_JOINT_CLOSE/OPEN
        assert (g.finger.closed, g.finger.open) == (0.0440, 0.0579)  # _POSITION_CLOSE/OPEN
        assert spec.dim(name).measured_as()[0] == "left_finger"  # what datasets normalise
    for leader in spec.teleop:
        assert (leader.gripper.closed, leader.gripper.open) == (-0.0552, 0.8298)


def test_leader_to_follower_matches_upstream_formula():
    spec = load_embodiment("aloha")
    leader, follower = spec.teleop[0].gripper, spec.dim("left_gripper").gripper
    for x in (-0.0552, 0.0, 0.4, 0.8298):
        upstream = (x - -0.0552) / (0.8298 - -0.0552) * (1.6214 - 0.6197) + 0.6197
        assert leader_to_follower(leader, follower, x) == pytest.approx(upstream)


@given(st.floats(-2, 2), st.floats(0.01, 3), st.floats(-0.5, 1.5))
def test_gripper_map_round_trips(closed, span, x):
    g = GripperMap(closed=closed, open=closed + span)
    assert g.to_normalised(g.to_robot(x)) == pytest.approx(x, abs=1e-9)


def test_every_profile_loads_and_names_what_it_lacks():
    spec = load_embodiment("aloha")
    assert set(available_profiles()) >= {"aloha_stationary", "aloha_main", "aloha_mobile",
                                         "aloha_sim"}
    for name in available_profiles():
        p = load_profile(name)
        assert list(p.start_arm_pose) == START_ARM_POSE
        assert list(p.sleep_arm_pose) == SLEEP_POSE
        assert set(p.followers) == {"follower_left", "follower_right"}
        if name == "aloha_mobile":  # three cameras: the 4-camera embodiment is refused
            with pytest.raises(ConfigError, match=r"no topic for camera\(s\) \['cam_low'\]"):
                p.check(spec)
        else:
            p.check(spec)


def test_camera_topics_per_branch():
    assert load_profile("aloha_stationary").cameras["cam_high"] == \
        "/camera_high/camera/color/image_rect_raw"  # 2.0: camera_high
    assert load_profile("aloha_main").cameras["cam_high"] == \
        "/cam_high/camera/color/image_rect_raw"  # main / 1.0: cam_high


def test_policy_input_topics_from_profile_or_convention():
    spec = load_embodiment("aloha")
    robots = ["follower_left", "follower_right"]
    cams, joints = input_topics(spec, robots, load_profile("aloha_stationary"))
    assert cams["cam_high"] == "/camera_high/camera/color/image_rect_raw"
    assert set(cams) == set(spec.cameras)
    assert joints == {r: f"/{load_profile('aloha_stationary').followers[r]}/joint_states"
                      for r in robots}
    cams, joints = input_topics(spec, robots, None)
    assert cams == {c: f"{c}/image_raw" for c in spec.cameras}
    assert joints == {"follower_left": "/follower_left/joint_states",
                      "follower_right": "/follower_right/joint_states"}
    _, joints = input_topics(load_embodiment("vx300s_single"), [""], None)
    assert joints == {"robot": "joint_states"}


def test_setup_is_upstreams_opening_ceremony():
    s = load_profile("aloha_stationary").setup
    assert (s.arm_mode, s.gripper_mode, s.gripper_current_limit) == \
        ("position", "current_based_position", 300)
    assert s.reboot_grippers and s.leaders_torque_off


def test_arm_order_of_recorded_data():
    spec = load_embodiment("aloha")
    two = load_profile("aloha_stationary")  # 2.0 scripts list follower_right first
    assert two.recorded_arm_order == ("follower_right", "follower_left")
    assert load_profile("aloha_main").recorded_arm_order == ("follower_left", "follower_right")
    ours = np.arange(14.0)
    recorded = two.to_recorded_order(spec, ours)
    np.testing.assert_array_equal(recorded[:7], ours[7:])  # right arm first
    np.testing.assert_array_equal(two.from_recorded_order(spec, recorded), ours)


def test_bad_profiles_are_rejected_by_name(tmp_path):
    base = (load_profile("aloha_stationary"),)
    assert base
    (tmp_path / "x.yaml").write_text("name: x\nembodiment: aloha\nfollowers: {}\ncameras: {}\n"
                                     "start_arm_pose: [0, 0, 0]\nsleep_arm_pose: [0,0,0,0,0,0]\n")
    with pytest.raises(ConfigError, match="start_arm_pose: expected 6"):
        load_profile("x", tmp_path)
    (tmp_path / "y.yaml").write_text(
        "name: y\nembodiment: aloha\nfollowers: {}\ncameras: {}\nstart_arm_pose: [0,0,0,0,0,0]"
        "\nsleep_arm_pose: [0,0,0,0,0,0]\nsetup: {gripper_mode: linear_position}\n")
    with pytest.raises(ConfigError, match="linear_position reads commands as metres"):
        load_profile("y", tmp_path)
    with pytest.raises(ConfigError, match="unknown robot profile 'nope'"):
        load_profile("nope")
