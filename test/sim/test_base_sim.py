"""The VLN base sim (MuJoCo room + unicycle) with the pure-pursuit follower, no ROS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qwen_vla_ros.runtime.follower import FollowerConfig, PurePursuit
from qwen_vla_ros.runtime.navigation import Pose2D, wrap
from qwen_vla_ros.sim.base import OBJECTS, BaseSim

DT = 0.05


@pytest.fixture(scope="module")
def sim():
    s = BaseSim(image_size=(60, 80))
    yield s
    s.close()


def drive(sim, follower, path, start, seconds=30.0):
    sim.reset(start)
    follower.set_path(np.asarray(path, float), start)
    follower.reset_velocity()
    vs, ws = [0.0], [0.0]
    for _ in range(int(seconds / DT)):
        v, w, done = follower.step(sim.pose, DT)
        vs.append(v)
        ws.append(w)
        if done:
            return True, np.array(vs), np.array(ws)
        sim.step(v, w, DT)
        assert not sim.bumped
    return False, np.array(vs), np.array(ws)


@pytest.mark.parametrize("goal,start", [
    ((1.5, -0.8), Pose2D(0.0, 0.0, 0.0)),
    ((-1.2, 0.5), Pose2D(0.0, 0.0, 0.0)),  # behind: turns in place first
    ((1.0, 1.8), Pose2D(-0.5, -0.5, 2.0)),
])
def test_follower_reaches_a_waypoint_within_tolerance_and_limits(sim, goal, start):
    cfg = FollowerConfig()
    f = PurePursuit(cfg)
    mid = ((start.x + goal[0]) / 2, (start.y + goal[1]) / 2, 0.0)
    done, vs, ws = drive(sim, f, [mid, (*goal, 0.0)], start)
    assert done, f"not reached: at {sim.pose}"
    assert math.hypot(sim.pose.x - goal[0], sim.pose.y - goal[1]) <= cfg.goal_tolerance + 0.02
    assert abs(wrap(sim.pose.yaw - 0.0)) <= cfg.yaw_tolerance  # the last waypoint's yaw
    assert np.all(np.abs(vs) <= cfg.max_linear + 1e-9)
    assert np.all(np.abs(ws) <= cfg.max_angular + 1e-9)
    # Acceleration limits while driving (the final stop is allowed to be immediate).
    assert np.all(np.abs(np.diff(vs[:-1])) <= cfg.max_linear_accel * DT + 1e-9)
    assert np.all(np.abs(np.diff(ws[:-1])) <= cfg.max_angular_accel * DT + 1e-9)


@pytest.mark.parametrize("turn", [1.6, -2.5, 3.0])
def test_a_plan_that_only_turns_is_turned_in_place(sim, turn):
    """A VLN plan whose waypoints stay by the robot but turn it (look for the named object
    first): the follower turns in place to the last yaw, within the limits, without driving."""
    cfg = FollowerConfig()
    f = PurePursuit(cfg)
    start = Pose2D(0.3, -0.4, 0.5)
    path = [(start.x + 0.02, start.y, start.yaw + turn / 2), (start.x + 0.03, start.y + 0.01,
                                                              start.yaw + turn)]
    done, vs, ws = drive(sim, f, path, start, seconds=10.0)
    assert done
    assert abs(wrap(sim.pose.yaw - (start.yaw + turn))) <= cfg.yaw_tolerance
    assert abs(wrap(sim.pose.yaw - start.yaw)) > 1.0  # it did turn
    assert np.all(vs == 0.0) and math.hypot(sim.pose.x - start.x, sim.pose.y - start.y) < 1e-9
    assert np.all(np.abs(ws) <= cfg.max_angular + 1e-9)
    assert np.all(np.abs(np.diff(ws[:-1])) <= cfg.max_angular_accel * DT + 1e-9)


def test_a_path_without_yaws_ends_at_the_position():
    """[N, 2] paths (the scripted demonstrator's) keep the position-only behaviour."""
    f = PurePursuit()
    here = Pose2D(0.0, 0.0, 0.0)
    f.set_path(np.array([[0.05, 0.0]]), here)
    assert f.step(here, DT) == (0.0, 0.0, True)
    f.set_path(np.array([[0.05, 0.0, 2.0]]), here)  # the same point with a yaw: turn first
    v, w, done = f.step(here, DT)
    assert not done and v == 0.0 and w > 0.0


def test_walls_and_objects_stop_the_base(sim):
    red = OBJECTS[0]
    sim.reset(Pose2D(red.x - 1.0, red.y, 0.0))  # facing the red box
    for _ in range(100):
        sim.step(0.5, 0.0, DT)
    assert sim.bumped and sim.pose.x < red.x - red.radius
    with pytest.raises(ValueError):
        sim.reset(Pose2D(red.x, red.y, 0.0))


def test_camera_sees_the_object_it_faces(sim):
    """Facing the red box the image is redder than facing the blue sphere."""
    def redness(img):
        img = img.astype(float)
        return float(np.mean(img[..., 0] - (img[..., 1] + img[..., 2]) / 2))

    red, blue = OBJECTS[0], OBJECTS[2]
    sim.reset(Pose2D(0.0, 0.0, math.atan2(red.y, red.x)))
    at_red = sim.render()
    sim.reset(Pose2D(0.0, 0.0, math.atan2(blue.y, blue.x)))
    at_blue = sim.render()
    assert at_red.shape == (60, 80, 3) and at_red.dtype == np.uint8
    assert redness(at_red) > redness(at_blue) + 5
