"""VLN core without ROS: waypoint transforms, pose history, stop semantics, frame history."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qwen_vla_ros.runtime.navigation import (
    Navigator,
    NavState,
    Pose2D,
    PoseHistory,
    plan_from_chunk,
    quaternion_from_yaw,
    yaw_from_quaternion,
)
from qwen_vla_ros.runtime.observation import FrameHistory, Rejection

NAMES = ["x", "y", "yaw", "stop"]


def test_waypoints_transform_with_a_known_pose():
    pose = Pose2D(1.0, 2.0, math.pi / 2)  # facing +y
    local = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, math.pi / 2], [-1.0, 0.0, math.pi]])
    odom = pose.compose(local)
    np.testing.assert_allclose(odom[:, :2], [[1.0, 3.0], [0.0, 2.0], [1.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(np.cos(odom[:, 2]), np.cos([math.pi / 2, math.pi, -math.pi / 2]),
                               atol=1e-12)
    np.testing.assert_allclose(pose.to_local(odom), local[:, :2], atol=1e-12)
    for yaw in (-3.0, -0.3, 0.0, 1.2, 3.1):
        assert yaw_from_quaternion(*quaternion_from_yaw(yaw)) == pytest.approx(yaw)


def test_plan_uses_the_pose_at_the_observation_time_not_now():
    hist = PoseHistory(window=5.0)
    hist.add(10.0, Pose2D(0.0, 0.0, 0.0))
    hist.add(11.0, Pose2D(1.0, 0.0, math.pi / 2))
    at = hist.at(10.5)
    assert (at.x, at.y, at.yaw) == pytest.approx((0.5, 0.0, math.pi / 4))
    chunk = np.zeros((8, 4))
    chunk[:, 0] = 1.0  # 1 m straight ahead of the robot at t_obs
    plan = plan_from_chunk(chunk, NAMES, hist.at(10.0), 10.0)
    np.testing.assert_allclose(plan.waypoints[-1, :2], [1.0, 0.0], atol=1e-12)
    # Using "now" (t=11) instead would put it at (1, 1): the error this design avoids.
    wrong = plan_from_chunk(chunk, NAMES, hist.latest()[1], 10.0)
    assert np.linalg.norm(wrong.waypoints[-1, :2] - plan.waypoints[-1, :2]) > 0.9
    assert isinstance(hist.at(3.0), Rejection) and isinstance(hist.at(12.0), Rejection)
    assert hist.add(12.0, Pose2D(math.nan, 0, 0)) is not None


def test_stop_semantics():
    chunk = np.zeros((8, 4))
    chunk[:, 0] = np.arange(1, 9) * 0.1
    plan = plan_from_chunk(chunk, NAMES, Pose2D(), 0.0)
    assert not plan.stop_now and not plan.final and len(plan.waypoints) == 8
    chunk[3:, 3] = 0.9  # stop from step 3: the path ends at waypoint 3
    plan = plan_from_chunk(chunk, NAMES, Pose2D(), 0.0)
    assert not plan.stop_now and plan.final and len(plan.waypoints) == 4
    chunk[:, 3] = 0.7  # stop now
    assert plan_from_chunk(chunk, NAMES, Pose2D(), 0.0).stop_now
    with pytest.raises(ValueError):
        plan_from_chunk(np.full((8, 4), np.nan), NAMES, Pose2D(), 0.0)


def test_navigator_takes_no_goals_after_stop_until_a_new_instruction():
    nav = Navigator(1)
    go = plan_from_chunk(np.tile([1.0, 0, 0, 0], (8, 1)), NAMES, Pose2D(), 0.0)
    stop = plan_from_chunk(np.tile([1.0, 0, 0, 1.0], (8, 1)), NAMES, Pose2D(), 0.0)
    assert not nav.offer(go) and nav.state is NavState.IDLE
    nav.new_instruction()
    assert nav.offer(go) and nav.plan is go
    assert nav.offer(stop) and nav.state is NavState.STOPPED and nav.plan is None
    assert not nav.offer(go) and nav.state is NavState.STOPPED
    nav.new_instruction()
    assert nav.offer(go) and nav.state is NavState.NAVIGATING


def test_with_two_confirmations_a_lone_stop_vote_holds_still_and_a_plan_that_drives_on_clears_it():
    go = plan_from_chunk(np.tile([1.0, 0, 0, 0], (8, 1)), NAMES, Pose2D(), 0.0)
    stop = plan_from_chunk(np.tile([1.0, 0, 0, 1.0], (8, 1)), NAMES, Pose2D(), 0.0)
    ending = np.tile([1.0, 0, 0, 0], (8, 1))
    ending[4:, 3] = 1.0
    final = plan_from_chunk(ending, NAMES, Pose2D(), 0.0)
    assert final.final and not final.stop_now
    with pytest.raises(ValueError, match="confirmations"):
        Navigator(0)
    nav = Navigator(2)
    nav.new_instruction()
    assert nav.offer(go) and nav.plan is go
    assert nav.offer(stop)  # one vote: hold still (no plan), still navigating
    assert nav.state is NavState.NAVIGATING and nav.plan is None and nav.proposing_stop
    assert "1 of 2" in nav.reason
    assert nav.offer(go) and nav.votes == 0 and nav.plan is go  # drives on: the vote is gone
    assert nav.offer(stop) and nav.state is NavState.NAVIGATING
    assert nav.offer(stop) and nav.state is NavState.STOPPED  # two in a row
    nav.new_instruction()
    assert nav.votes == 0 and nav.offer(final) and nav.plan is final
    nav.reached_end()  # the end of a path that ends in a stop is a vote
    assert nav.state is NavState.NAVIGATING and nav.plan is None
    assert nav.offer(final) and nav.votes == 1  # a path ending in a stop keeps the count
    assert not nav.proposing_stop  # it drives that path
    nav.reached_end()
    assert nav.state is NavState.STOPPED and nav.reason == "reached the final waypoint"
    once = Navigator(1)  # the first vote stops
    once.new_instruction()
    assert once.offer(stop) and once.state is NavState.STOPPED


def test_frame_history_is_sampled_by_time_and_bounded():
    h = FrameHistory("front", length=3, period=1.0)
    for k in range(50):  # 10 Hz for 5 s
        h.put(np.full((2, 2, 3), k, np.uint8), k * 0.1)
    frames = h.frames(4.9)
    assert [round(t, 1) for t, _ in frames] == [2.0, 3.0, 4.0]
    assert len(h._kept) <= 4
    h.put(np.zeros((2, 2, 3), np.uint8), 0.0)  # time went backwards: start again
    assert h.frames(0.0) == []


def test_waypoints_beyond_the_embodiment_limits_are_clipped():
    from qwen_vla_ros.embodiment.spec import load_embodiment

    spec = load_embodiment("vln")
    chunk = np.tile([12.0, -7.0, 0.0, 0.0], (8, 1))  # limits are +-5 m
    plan = plan_from_chunk(chunk, NAMES, Pose2D(1.0, 0.0, 0.0), 0.0, 0.5, spec.lower(),
                           spec.upper())
    assert plan.clipped == 16
    np.testing.assert_allclose(plan.waypoints[:, :2], np.tile([6.0, -5.0], (8, 1)))
    # A sampled stop flag a hair above 1 (and x a hair beyond 5 m): clipped, not counted.
    hair = np.tile([5.05, 0.0, 0.0, 1.01], (8, 1))
    plan = plan_from_chunk(hair, NAMES, Pose2D(), 0.0, 0.5, spec.lower(), spec.upper())
    assert plan.clipped == 0 and plan.stop_now
    np.testing.assert_allclose(plan.waypoints[0, :2], [5.0, 0.0])
