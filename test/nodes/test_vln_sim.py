"""VLN closed loop: base_sim (MuJoCo) + navigation_node + mode_manager over DDS, sim time."""

from __future__ import annotations

import math

import pytest

rclpy = pytest.importorskip("rclpy")
from conftest import spinning, wait_for  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from test_navigation_node import nav_params, pinned_policy  # noqa: E402

from qwen_vla_ros.ros import qos  # noqa: E402

pytestmark = pytest.mark.ros
AHEAD = (1.0, 0.5)


@pytest.fixture(scope="module")
def policies():
    return {"go": pinned_policy(*AHEAD, 0.0), "stop": pinned_policy(0.0, 0.0, 1.0)}


def test_closed_loop_in_sim_moves_toward_the_waypoint_then_stops(policies):
    from qwen_vla_ros.nodes.base_sim import BaseSimNode
    from qwen_vla_ros.nodes.mode_manager import ModeManager
    from qwen_vla_ros.nodes.navigation_node import NavigationNode
    from qwen_vla_ros.ros.services import call_trigger

    rclpy.init()
    sim_time = Parameter("use_sim_time", value=True)
    try:
        sim = BaseSimNode(parameter_overrides=[Parameter("image_height", value=60),
                                               Parameter("image_width", value=80)])
        nav = NavigationNode(policy=policies["go"],
                             parameter_overrides=[*nav_params(inference_rate_hz=2.0),
                                                  sim_time],
                             cli_args=["--ros-args", "-r", "mode:=/mode_manager/mode"])
        modes = ModeManager(parameter_overrides=[sim_time])
        probe = rclpy.create_node("probe")
        odom = []
        probe.create_subscription(Odometry, "/odom", odom.append, qos.SENSOR)
        engage = probe.create_client(Trigger, "/mode_manager/engage_policy")
        with spinning(sim, nav, modes, probe):
            assert call_trigger(engage).success
            t0 = sim.now_sim()
            assert wait_for(lambda: sim.now_sim() > t0 + 4.0, 30)
            p = sim.sim.pose
            dist = math.hypot(p.x, p.y)
            assert dist > 0.3, f"base did not move: {p}"
            # Heading for the predicted point (1 m ahead, 0.5 m left): up and to the left.
            assert p.x > 0.2 and p.y > 0.05, p
            nav.policy = policies["stop"]
            assert wait_for(lambda: nav.status.startswith("STOPPED"), 15), nav.status
            t_stop = sim.now_sim()  # the zero command takes a few ticks to reach the sim
            assert wait_for(lambda: sim.now_sim() > t_stop + 0.3, 10)
            before = sim.sim.pose
            t1 = sim.now_sim()
            assert wait_for(lambda: sim.now_sim() > t1 + 1.0, 10)
            after = sim.sim.pose
            assert math.hypot(after.x - before.x, after.y - before.y) < 1e-6
            assert abs(odom[-1].twist.twist.linear.x) < 1e-9
        for n in (sim, nav, modes, probe):
            n.destroy_node()
    finally:
        rclpy.shutdown()


def test_vln_goto_episodes_are_announced_and_reset_to_the_next_seed():
    """base_sim with task vln_goto: the seeded start pose and instruction (latched ~/episode),
    the next seed's on ~/reset; collisions counted per episode."""
    import json

    from std_msgs.msg import String

    from qwen_vla_ros.nodes.base_sim import BaseSimNode
    from qwen_vla_ros.ros.services import call_trigger
    from qwen_vla_ros.sim.vln_task import sample_episode

    rclpy.init()
    try:
        sim = BaseSimNode(parameter_overrides=[
            Parameter("task", value="vln_goto"), Parameter("seed", value=5),
            Parameter("camera_rate_hz", value=0.0)])
        probe = rclpy.create_node("probe")
        episodes = []
        probe.create_subscription(String, "/base_sim/episode",
                                  lambda m: episodes.append(json.loads(m.data)), qos.LATCHED)
        reset = probe.create_client(Trigger, "/base_sim/reset")
        with spinning(sim, probe):
            assert wait_for(lambda: episodes, 10)
            for seed in (5, 6):
                ep = sample_episode(seed)
                if seed == 6:
                    assert call_trigger(reset).success
                    assert wait_for(lambda: len(episodes) == 2, 10)
                got = episodes[-1]
                assert got["seed"] == seed and got["instruction"] == ep.instruction
                assert got["target"] == ep.target.name
                assert got["start"] == pytest.approx([ep.start.x, ep.start.y, ep.start.yaw])
                p = sim.sim.pose
                assert math.hypot(p.x - ep.start.x, p.y - ep.start.y) < 1e-9
            assert sim.collisions == 0
        for n in (sim, probe):
            n.destroy_node()
    finally:
        rclpy.shutdown()


def test_the_language_check_runs_each_start_once_per_colour():
    """``colours``: the same start pose with each colour named in turn, then the next seed;
    each reset's episode carries its index (seeds repeat)."""
    import json

    from std_msgs.msg import String

    from qwen_vla_ros.errors import ConfigError
    from qwen_vla_ros.nodes.base_sim import BaseSimNode
    from qwen_vla_ros.ros.services import call_trigger
    from qwen_vla_ros.sim.vln_task import named_object

    rclpy.init()
    try:
        with pytest.raises(ConfigError, match=r"unknown colour\(s\) \['purple'\]"):
            BaseSimNode(parameter_overrides=[Parameter("colours", value="red,purple")])
        sim = BaseSimNode(parameter_overrides=[
            Parameter("task", value="vln_goto"), Parameter("seed", value=40),
            Parameter("colours", value="blue,red"), Parameter("camera_rate_hz", value=0.0)])
        probe = rclpy.create_node("probe")
        episodes = []
        probe.create_subscription(String, "/base_sim/episode",
                                  lambda m: episodes.append(json.loads(m.data)), qos.LATCHED)
        reset = probe.create_client(Trigger, "/base_sim/reset")
        with spinning(sim, probe):
            assert wait_for(lambda: episodes, 10)
            for k in (1, 2):
                assert call_trigger(reset).success
                assert wait_for(lambda k=k: len(episodes) == k + 1, 10)
        assert [e["index"] for e in episodes] == [0, 1, 2]
        assert [e["seed"] for e in episodes] == [40, 40, 41]
        assert [named_object(e["instruction"]).name.split("_")[0] for e in episodes] == \
            ["blue", "red", "blue"]
        assert episodes[0]["start"] == episodes[1]["start"] != episodes[2]["start"]
        for n in (sim, probe):
            n.destroy_node()
    finally:
        rclpy.shutdown()


def test_the_obstacle_stop_holds_the_base_short_of_the_box_it_is_sent_into():
    """A policy that always asks for a point 3 m ahead, from 0.8 m in front of the red box:
    with base_sim's LaserScan wired to navigation_node's obstacle stop, the base brakes and
    waits at the stop clearance, BLOCKED, without touching the box."""
    from qwen_vla_ros.nodes.base_sim import BaseSimNode
    from qwen_vla_ros.nodes.mode_manager import ModeManager
    from qwen_vla_ros.nodes.navigation_node import NavigationNode
    from qwen_vla_ros.ros.services import call_trigger
    from qwen_vla_ros.sim.base import BASE_RADIUS, OBJECTS

    red = next(o for o in OBJECTS if o.name == "red_box")
    face = red.x - red.radius * 0.7  # the box's west face (sim/base.py)
    rclpy.init()
    sim_time = Parameter("use_sim_time", value=True)
    try:
        sim = BaseSimNode(parameter_overrides=[
            Parameter("image_height", value=60), Parameter("image_width", value=80),
            Parameter("start_x", value=face - BASE_RADIUS - 0.8),
            Parameter("start_y", value=red.y)])
        nav = NavigationNode(policy=pinned_policy(3.0, 0.0, 0.0),
                             parameter_overrides=[*nav_params(inference_rate_hz=2.0,
                                                              scan_topic="scan"), sim_time],
                             cli_args=["--ros-args", "-r", "mode:=/mode_manager/mode"])
        modes = ModeManager(parameter_overrides=[sim_time])
        probe = rclpy.create_node("probe")
        engage = probe.create_client(Trigger, "/mode_manager/engage_policy")
        with spinning(sim, nav, modes, probe):
            assert call_trigger(engage).success
            assert wait_for(lambda: nav.status.startswith("BLOCKED: obstacle ahead"), 30), \
                (nav.status, sim.sim.pose)
            t = sim.now_sim()
            assert wait_for(lambda: sim.now_sim() > t + 1.0, 10)  # and it stays there
            gap = face - sim.sim.pose.x - BASE_RADIUS
            assert 0.05 <= gap <= 0.12 and sim.collisions == 0, (gap, sim.collisions)
            assert nav.status.startswith("BLOCKED") and abs(sim.sim.v) < 1e-9
        for n in (sim, nav, modes, probe):
            n.destroy_node()
    finally:
        rclpy.shutdown()
