"""navigation_node's decisions without ROS: parameters, modes, staleness, plans from chunks,
stop semantics and the Nav2 hand-off."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.model.types import ActionChunk
from qwen_vla_ros.params import described
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.nav_control import NavigationController, NavigationParams
from qwen_vla_ros.runtime.navigation import NavState, Pose2D

SPEC = load_embodiment("vln")
FRAME = np.zeros((48, 64, 3), np.uint8)


def controller(**overrides) -> NavigationController:
    nav = NavigationController(SPEC, NavigationParams(**overrides))
    nav.set_instruction("go to the red box")
    return nav


def feed(nav: NavigationController, t: float, pose: Pose2D | None = None) -> None:
    nav.add_image(FRAME, t)
    assert nav.add_pose(t, pose or Pose2D()) is None


def chunk_for(nav: NavigationController, t: float, forward: float, stop_from: int | None = None):
    request = nav.request(t)
    assert not isinstance(request, str), request
    actions = np.zeros((SPEC.horizon, SPEC.action_dim))
    actions[:, 0] = np.linspace(forward / SPEC.horizon, forward, SPEC.horizon)
    if stop_from is not None:
        actions[stop_from:, 3] = 1.0
    return request, ActionChunk(actions=actions, embodiment="vln",
                                stamp=request.observation.stamp, dt=SPEC.dt)


def test_every_parameter_is_described_and_bad_values_are_named():
    names = [name for name, _, text in described(NavigationParams) if text]
    assert len(names) == len(dataclasses.fields(NavigationParams))
    with pytest.raises(ConfigError) as err:
        NavigationParams(control_rate_hz=0.0, pose_source="gps", max_odom_age=math.nan)
    for name in ("control_rate_hz", "pose_source", "max_odom_age"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match="not waypoints"):
        NavigationController(load_embodiment("aloha"), NavigationParams())


def test_hold_sends_zero_and_teleop_passes_through_until_it_times_out():
    nav = controller()
    assert nav.control(0.0).velocity.v == 0.0
    nav.set_mode(Mode.TELEOP)
    assert nav.set_teleop(1.0, 0.3, -0.2) is None
    out = nav.control(1.2)
    assert (out.velocity.v, out.velocity.w) == (0.3, -0.2)
    assert nav.control(1.0 + 0.51).velocity.v == 0.0  # teleop_timeout 0.5 s
    assert "NaN" in nav.set_teleop(2.0, math.nan, 0.0)
    assert nav.set_mode(" policy ") and nav.mode is Mode.POLICY  # as mode_manager writes it
    with pytest.raises(ValueError, match="unknown mode"):
        nav.set_mode("DRIVE")
    assert nav.mode is Mode.POLICY


def test_policy_without_fresh_inputs_stops_and_says_why():
    nav = controller()
    nav.set_mode(Mode.POLICY)
    out = nav.control(0.0)
    assert out.velocity.v == 0.0 and out.status == "STALE: no odometry yet"
    feed(nav, 1.0)
    assert nav.control(1.0).status == "NAVIGATING"
    out = nav.control(1.4)  # odometry 400 ms old > max_odom_age 0.3
    assert out.velocity.v == 0.0 and out.status.startswith("STALE: odometry is 400 ms")
    assert isinstance(nav.request(1.4), str)


def test_a_chunk_becomes_a_plan_at_the_observation_pose_and_the_follower_drives_it():
    nav = controller()
    nav.set_mode(Mode.POLICY)
    feed(nav, 0.0, Pose2D(1.0, 2.0, math.pi / 2))  # facing +y
    request, chunk = chunk_for(nav, 0.0, forward=2.0)
    feed(nav, 0.05, Pose2D(1.0, 2.3, math.pi / 2))  # moved on while the model thought
    out = nav.on_chunk(request, chunk)
    assert out.error is None and out.plan is not None
    # Placed from where the robot was at the observation, not where it is now (1, 4.3).
    np.testing.assert_allclose(out.plan.waypoints[-1, :2], [1.0, 4.0], atol=1e-9)
    assert out.robot == Pose2D(1.0, 2.3, math.pi / 2)
    v = [nav.control(0.05 + 0.05 * k).velocity.v for k in range(1, 5)]
    assert v[-1] > 0 and v == sorted(v)  # accelerating along the path, within the limit
    assert max(v) <= NavigationParams().max_linear


def test_stop_flag_stops_and_a_new_instruction_navigates_again():
    nav = controller(stop_confirmations=1)
    nav.set_mode(Mode.POLICY)
    feed(nav, 0.0)
    out = nav.on_chunk(*chunk_for(nav, 0.0, forward=1.0, stop_from=0))
    assert out.status.startswith("STOPPED") and nav.navigator.state is NavState.STOPPED
    assert not nav.wants_plan()
    feed(nav, 0.1)
    assert nav.control(0.1).velocity.v == 0.0
    assert "empty" in nav.set_instruction("  ")  # ignored: the stop stands
    assert not nav.wants_plan()
    assert nav.set_instruction("go to the blue box") is None
    assert nav.wants_plan()


def test_a_stop_to_be_confirmed_halts_the_base_and_keeps_planning_until_the_second_vote():
    nav = controller()  # the default: two votes
    nav.set_mode(Mode.POLICY)
    feed(nav, 0.0)
    assert nav.on_chunk(*chunk_for(nav, 0.0, forward=2.0)).plan is not None
    v = [nav.control(0.05 * k).velocity.v for k in range(1, 5)]
    assert v[-1] > 0  # driving the plan
    feed(nav, 0.2)
    out = nav.on_chunk(*chunk_for(nav, 0.2, forward=1.0, stop_from=0))
    assert out.status is None and nav.navigator.state is NavState.NAVIGATING
    assert nav.wants_plan()  # asks the model again
    out = nav.control(0.25)
    assert out.velocity.v == 0.0 and out.velocity.w == 0.0  # holding, not driving on
    assert out.status.startswith("NAVIGATING: stop proposed (1 of 2")
    feed(nav, 1.2)
    out = nav.on_chunk(*chunk_for(nav, 1.2, forward=1.0, stop_from=0))
    assert out.status.startswith("STOPPED: the policy decided")
    assert not nav.wants_plan()


def test_with_nav2_driving_the_node_sends_no_velocity_and_a_stop_ends_the_goal():
    nav = controller(follower=False, stop_confirmations=1)
    nav.set_mode(Mode.POLICY)
    feed(nav, 0.0, Pose2D(3.0, 1.0, 0.0))
    assert nav.control(0.0).velocity is None
    out = nav.on_chunk(*chunk_for(nav, 0.0, forward=1.0, stop_from=0))
    assert out.goal_here == Pose2D(3.0, 1.0, 0.0)  # Nav2 reaches it at once
    nav.set_mode(Mode.HOLD)
    assert nav.control(0.1).velocity.v == 0.0  # HOLD still owns cmd_vel


def test_a_nan_chunk_is_refused():
    nav = controller()
    nav.set_mode(Mode.POLICY)
    feed(nav, 0.0)
    request, chunk = chunk_for(nav, 0.0, forward=1.0)
    chunk.actions[2, 1] = math.nan
    out = nav.on_chunk(request, chunk)
    assert out.error and "NaN" in out.error and out.plan is None


def test_a_paced_step_waits_for_its_frame_and_pose_and_a_run_restarts_the_history():
    """``awaiting``: the camera frame due by the clock and the odometry stamped at it, while
    the last ones are fresh (stale ones are not waited for). ``restart_run``: chunk seeds from
    the start again and the latest frame begins the history."""
    nav = controller(history_frames=2, history_period_s=1.0)
    for k in range(3):  # frames at 0, 0.2, 0.4 s: the camera's period is learned
        feed(nav, 0.2 * k)
    assert nav.awaiting(0.4) == []
    assert nav.add_pose(0.42, Pose2D()) is None
    assert nav.awaiting(0.6) == ["front", "odom"]  # both sent for 0.6 before the clock
    feed(nav, 0.6)
    assert nav.awaiting(0.6) == []
    assert nav.awaiting(5.0) == []  # stale: the request will say so, nothing to wait for
    request, chunk = chunk_for(nav, 0.6, 0.5)
    assert nav.on_chunk(request, chunk).error is None
    assert nav.request(0.6).seed == request.seed + 1  # the next chunk's seed
    nav.restart_run(0.6)
    assert nav.request(0.6).seed == request.seed  # a run's chunks sample the same seeds
    assert [t for t, _ in nav.loop.history.frames(1.6)] == [0.6]
    assert nav.instruction_taken.is_set()
