"""The obstacle stop: free distance from a range scan, and navigation's controller driving
the MuJoCo base into the red box with and without it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.model.types import ActionChunk
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.nav_control import NavigationController, NavigationParams
from qwen_vla_ros.runtime.navigation import Pose2D
from qwen_vla_ros.runtime.obstacle import free_space
from qwen_vla_ros.sim.base import BASE_RADIUS, OBJECTS, BaseSim

SPEC = load_embodiment("vln")
RED = next(o for o in OBJECTS if o.name == "red_box")


def test_free_distance_is_along_the_footprints_swept_corridor():
    half = 0.3  # radius 0.2 + clearance 0.1
    cases = [  # (angle, range) of one return -> free ahead, free behind
        ((0.0, 2.0), 2.0 - half, math.inf),  # dead ahead
        ((math.pi, 1.0), math.inf, 1.0 - half),  # dead behind
        ((math.atan2(0.2, 1.5), math.hypot(1.5, 0.2)), 1.5 - math.sqrt(half**2 - 0.04),
         math.inf),  # ahead, off the centre line, inside the corridor
        ((math.atan2(0.31, 1.0), math.hypot(1.0, 0.31)), math.inf, math.inf),  # beside it
        ((math.pi / 2, 0.25), math.inf, math.inf),  # beside the base, inside the clearance
        ((0.1, 0.2), 0.0, math.inf),  # already inside the clearance ahead
    ]
    for (angle, r), ahead, behind in cases:
        free = free_space([angle], [r], 0.2, 0.1, stamp=0.0)
        assert free.ahead == pytest.approx(ahead) and free.behind == pytest.approx(behind), \
            (angle, r, free)
    noise = free_space([0.0, 0.1, 0.2, 0.3], [math.nan, math.inf, 0.01, 1.0], 0.2, 0.1, 0.0,
                       range_min=0.05)  # NaN, no return, below range_min: not obstacles
    assert noise.ahead == pytest.approx(1.0 * math.cos(0.3) - math.sqrt(
        half**2 - math.sin(0.3) ** 2))
    with pytest.raises(ValueError, match="2 angles and 1 ranges"):
        free_space([0.0, 1.0], [1.0], 0.2, 0.1, 0.0)


def test_speed_limit_brakes_within_the_free_distance():
    free = free_space([0.0], [1.3], 0.2, 0.1, stamp=0.0)  # 1.0 m free ahead
    assert free.speed_limit(0.5, decel=0.8) == pytest.approx(math.sqrt(1.6))
    assert free.speed_limit(0.5, decel=0.8, travelled=0.6) == pytest.approx(math.sqrt(0.64))
    assert free.speed_limit(0.5, decel=0.8, travelled=2.0) == 0.0
    assert free.speed_limit(-0.5, decel=0.8) == math.inf  # nothing behind


def test_a_scan_of_the_room_sees_the_box_face_ahead():
    sim = BaseSim(start=Pose2D(1.0, RED.y, 0.0))  # facing the red box's west face
    angles, ranges = sim.scan()
    free = free_space(angles, ranges, BASE_RADIUS, 0.1, stamp=0.0)
    face = RED.x - RED.radius * 0.7  # the box's half size (sim/base.py)
    assert free.ahead == pytest.approx(face - 1.0 - BASE_RADIUS - 0.1, abs=0.02)
    assert free.behind == pytest.approx(1.0 + 3.0 - 0.05 - BASE_RADIUS - 0.1, abs=0.02)


def drive_at_the_box(scan: bool) -> tuple[BaseSim, list[str], list[float]]:
    """POLICY with a plan 3 m straight through the red box, the follower driving the MuJoCo
    base at the control rate, odometry, camera and (``scan``) the range scan fed from it."""
    params = NavigationParams(scan_topic="scan" if scan else "")
    nav = NavigationController(SPEC, params)
    nav.set_instruction("go to the red box")
    nav.set_mode(Mode.POLICY)
    sim = BaseSim(image_size=(48, 64), start=Pose2D(0.0, RED.y, 0.0))
    frame = np.zeros((48, 64, 3), np.uint8)
    t = 0.0

    def observe() -> None:
        nav.add_image(frame, t)
        assert nav.add_pose(t, sim.pose) is None
        if scan:
            assert nav.add_scan(t, *sim.scan()) is None

    observe()
    request = nav.request(t)
    actions = np.zeros((SPEC.horizon, SPEC.action_dim))
    actions[:, 0] = np.linspace(3.0 / SPEC.horizon, 3.0, SPEC.horizon)
    nav.on_chunk(request, ActionChunk(actions=actions, embodiment="vln",
                                      stamp=request.observation.stamp, dt=SPEC.dt))
    statuses, speeds = [], []
    for _ in range(int(8.0 / nav.control_dt)):
        out = nav.control(t)
        statuses.append(out.status or "")
        speeds.append(out.velocity.v)
        sim.step(out.velocity.v, out.velocity.w, nav.control_dt)
        t += nav.control_dt
        if sim.bumped:
            break
        observe()
    return sim, statuses, speeds


def test_the_follower_stops_short_of_the_box_with_the_scan_and_hits_it_without():
    assert NavigationParams().footprint_radius == BASE_RADIUS  # the sim base is the default
    blind, _, _ = drive_at_the_box(scan=False)
    assert blind.bumped, "the plan through the box should hit it without the obstacle stop"
    sim, statuses, speeds = drive_at_the_box(scan=True)
    assert not sim.bumped
    gap = RED.x - RED.radius * 0.7 - sim.pose.x - BASE_RADIUS  # footprint to the box face
    assert 0.08 <= gap <= 0.12, gap  # stop_clearance 0.1
    assert statuses[-1].startswith("BLOCKED: obstacle ahead") and speeds[-1] == 0.0
    assert max(speeds) > 0.3 and min(speeds) >= 0.0  # it drove, then braked, never reversed
    # Braking within the follower's deceleration limit, as demo vln's check has it, but
    # for the last step to zero.
    v = np.array(speeds)
    decel = -np.diff(v)[v[1:] > 0] * NavigationParams().control_rate_hz
    assert np.max(decel) <= NavigationParams().max_linear_accel + 1e-9, np.max(decel)


def test_a_missing_or_stale_scan_stops_the_base():
    nav = NavigationController(SPEC, NavigationParams(scan_topic="scan"))
    nav.set_instruction("go to the red box")
    nav.set_mode(Mode.POLICY)
    nav.add_image(np.zeros((48, 64, 3), np.uint8), 1.0)
    nav.add_pose(1.0, Pose2D())
    out = nav.control(1.0)
    assert out.velocity.v == 0.0 and out.status == "STALE: scan is missing or stale"
    assert nav.add_scan(1.0, [0.0], [2.0]) is None
    assert nav.control(1.0).status == "NAVIGATING"
    nav.add_image(np.zeros((48, 64, 3), np.uint8), 1.6)
    nav.add_pose(1.6, Pose2D())
    assert nav.control(1.6).status == "STALE: scan is missing or stale"  # 0.6 s > 0.5
    assert "scan refused" in nav.add_scan(1.6, [0.0, 1.0], [2.0])
