"""The VLN base sim (MuJoCo room + unicycle) with the pure-pursuit follower, no ROS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qwen_vla_ros.runtime.follower import FollowerConfig, PurePursuit
from qwen_vla_ros.runtime.navigation import Pose2D
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
    assert np.all(np.abs(vs) <= cfg.max_linear + 1e-9)
    assert np.all(np.abs(ws) <= cfg.max_angular + 1e-9)
    # Acceleration limits while driving (the final stop is allowed to be immediate).
    assert np.all(np.abs(np.diff(vs[:-1])) <= cfg.max_linear_accel * DT + 1e-9)
    assert np.all(np.abs(np.diff(ws[:-1])) <= cfg.max_angular_accel * DT + 1e-9)


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
