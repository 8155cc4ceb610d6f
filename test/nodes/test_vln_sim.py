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
