"""Navigation training targets from an odometry track (no ROS): waypoints in the robot frame
of the observation time, the stop flag from the time the base came to rest."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.learning.nav_dataset import rest_time, waypoint_targets
from qwen_vla_ros.runtime.navigation import Pose2D, plan_from_chunk

SPEC = load_embodiment("vln")
NAMES = [a.name for a in SPEC.action]


def drive(heading: float, speed: float, moving_s: float, rest_s: float, start=(1.0, -2.0)):
    """A straight drive along ``heading``, then rest: (times, poses) at 50 Hz."""
    t = np.arange(0, moving_s + rest_s, 0.02)
    d = speed * np.minimum(t, moving_s)
    poses = np.stack([start[0] + d * math.cos(heading), start[1] + d * math.sin(heading),
                      np.full_like(t, heading)], axis=1)
    return t, poses


def test_waypoints_are_where_the_base_went_in_the_frame_of_the_tick():
    t, poses = drive(heading=2.0, speed=0.4, moving_s=6.0, rest_s=2.0)
    ticks = np.array([1.0, 3.0])
    a = waypoint_targets(t, poses, ticks, SPEC.dt, SPEC.horizon, NAMES)
    assert a.shape == (2, SPEC.horizon, len(NAMES))
    # straight ahead: x grows 0.4 m/s * 0.5 s per step, no lateral offset, no turn
    np.testing.assert_allclose(a[0, :, NAMES.index("x")], 0.2 * np.arange(1, 9), atol=1e-6)
    np.testing.assert_allclose(a[0, :, NAMES.index("y")], 0.0, atol=1e-6)
    np.testing.assert_allclose(a[0, :, NAMES.index("yaw")], 0.0, atol=1e-9)
    # from t = 3 s the base moves 3 s more: waypoint k at 0.5 (k+1) s, held from 6 s on
    x = a[1, :, NAMES.index("x")]
    np.testing.assert_allclose(x[:6], 0.2 * np.arange(1, 7), atol=1e-6)
    np.testing.assert_allclose(x[6:], 1.2, atol=1e-6)
    # the stop flag marks the waypoints at or after the rest time: 6 s, less the time the
    # last REST_XY (2 cm) take at 0.4 m/s
    assert rest_time(t, poses) == pytest.approx(6.0 - 0.02 / 0.4, abs=0.021)
    assert a[1, :, NAMES.index("stop")].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert a[0, :, NAMES.index("stop")].sum() == 0


def test_targets_read_back_into_the_path_the_base_drove():
    """What the model learns is what navigation_node's plan_from_chunk turns into a path:
    the targets of a tick, placed at that tick's pose, are the poses the base went through,
    and the path ends where the stop flag starts."""
    t, poses = drive(heading=-0.7, speed=0.3, moving_s=4.0, rest_s=3.0, start=(0.5, 0.5))
    tick = 2.5
    a = waypoint_targets(t, poses, np.array([tick]), SPEC.dt, SPEC.horizon, NAMES)[0]
    at_tick = Pose2D(*[float(np.interp(tick, t, poses[:, i])) for i in range(3)])
    plan = plan_from_chunk(a, NAMES, at_tick, tick)
    assert plan.final and not plan.stop_now and len(plan.waypoints) == 3  # rest at 4.0 s
    for k, wp in enumerate(plan.waypoints):
        expected = [np.interp(tick + 0.5 * (k + 1), t, poses[:, i]) for i in range(3)]
        np.testing.assert_allclose(wp, expected, atol=1e-6)
    at_rest = waypoint_targets(t, poses, np.array([5.0]), SPEC.dt, SPEC.horizon, NAMES)[0]
    assert plan_from_chunk(at_rest, NAMES, Pose2D(*poses[-1]), 5.0).stop_now


def test_a_turn_through_pi_stays_continuous():
    """Turning in place past +-pi: the relative yaw grows smoothly (clipped at the limit), it
    never flips sign between neighbouring waypoints."""
    t = np.arange(0, 6, 0.02)
    yaw = np.angle(np.exp(1j * (2.5 + 0.8 * t)))  # odometry reports wrapped yaw
    poses = np.stack([np.zeros_like(t), np.zeros_like(t), yaw], axis=1)
    a = waypoint_targets(t, poses, np.array([0.5]), SPEC.dt, SPEC.horizon, NAMES)[0]
    rel = a[:, NAMES.index("yaw")]
    assert np.all(np.diff(rel) >= -1e-9) and rel.max() <= math.pi + 1e-9
    np.testing.assert_allclose(rel[:3], 0.4 * np.arange(1, 4), atol=1e-6)


def test_unknown_action_dims_are_refused():
    t, poses = drive(0.0, 0.2, 1.0, 1.0)
    with pytest.raises(ValueError, match="no navigation target"):
        waypoint_targets(t, poses, np.array([0.5]), 0.5, 8, ["x", "y", "z"])


def test_samples_whose_targets_cover_a_detour_are_dropped_the_recovery_kept():
    """collect --detours: the targets of a tick are the poses over (t, t + window]; where that
    covers a push (its commands act until the next one, DETOUR_PAD_S later) the tick goes,
    and every tick from the end of the push on stays."""
    from qwen_vla_ros.learning.nav_dataset import DETOUR_PAD_S, clear_of_detours

    window = SPEC.horizon * SPEC.dt
    ticks = np.arange(0.0, 20.0, 0.2)
    push = [8.0, 9.0]
    keep = clear_of_detours(ticks, [push], window)
    np.testing.assert_array_equal(keep, (ticks + window <= push[0])
                                  | (ticks >= push[1] + DETOUR_PAD_S))
    assert keep[ticks < 8.0 - window - 1e-9].all() and not keep[(ticks > 4.1) & (ticks < 9)].any()
    assert keep[ticks > 9.2].all()
    assert clear_of_detours(ticks, [], window).all()
    two = clear_of_detours(ticks, [push, [15.0, 15.5]], window)
    np.testing.assert_array_equal(two, keep & clear_of_detours(ticks, [[15.0, 15.5]], window))
