"""velocity_adapter: Float64MultiArray for a joint arm and Twist for a base, real nodes."""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Duration, Time  # noqa: E402
from conftest import spinning  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from qwen_vla_ros.embodiment.spec import load_embodiment  # noqa: E402
from qwen_vla_ros.ros import qos  # noqa: E402
from qwen_vla_ros.ros.conversions import chunk_to_trajectory, sec_to_stamp  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def stack():
    from qwen_vla_ros.nodes.mode_manager import ModeManager
    from qwen_vla_ros.nodes.velocity_adapter import VelocityAdapter

    rclpy.init()
    remap = ["--ros-args", "-r", "mode:=/mode_manager/mode"]
    arm = VelocityAdapter(cli_args=remap)
    base = VelocityAdapter(cli_args=[*remap, "-r", "__node:=base_adapter"],
                           parameter_overrides=[Parameter("embodiment", value="diff_drive_base"),
                                                Parameter("output", value="twist")])
    modes = ModeManager()
    rig = rclpy.create_node("rig")
    got = {"arm": [], "base": []}
    rig.create_subscription(Float64MultiArray, "commands", lambda m: got["arm"].append(m),
                            qos.COMMAND)
    rig.create_subscription(Twist, "cmd_vel", lambda m: got["base"].append(m), qos.COMMAND)
    js = rig.create_publisher(JointState, "joint_states", qos.SENSOR)
    spec = load_embodiment("vx300s_single")
    names = [d.joint for d in spec.action]

    def publish_js():
        msg = JointState(name=names, position=[0.0] * 6 + [-0.6213])
        msg.header.stamp = rig.get_clock().now().to_msg()
        js.publish(msg)
    rig.create_timer(0.02, publish_js)
    pubs = {"arm": rig.create_publisher(JointTrajectory, "/velocity_adapter/action_chunk",
                                        qos.COMMAND),
            "base": rig.create_publisher(JointTrajectory, "/base_adapter/action_chunk",
                                         qos.COMMAND)}
    clients = {n: rig.create_client(Trigger, f"/mode_manager/{n}")
               for n in ("engage_policy", "hold")}
    with spinning(arm, base, modes, rig):
        yield rig, got, pubs, clients
    for n in (arm, base, modes, rig):
        n.destroy_node()
    rclpy.shutdown()


def call(clients, name):
    from qwen_vla_ros.ros.services import call_trigger

    assert call_trigger(clients[name]).success


def chunk(rig, spec, actions):
    stamp = sec_to_stamp(rig.get_clock().now().nanoseconds * 1e-9, Time)
    return chunk_to_trajectory(actions, spec.action_names, spec.dt, JointTrajectory,
                               JointTrajectoryPoint, Duration, stamp=stamp)


def test_velocities_follow_the_chunk_within_limits_and_stop_on_hold(stack):
    rig, got, pubs, clients = stack
    arm, base = load_embodiment("vx300s_single"), load_embodiment("diff_drive_base")
    time.sleep(0.3)
    call(clients, "engage_policy")
    slope = 0.2  # rad/s on the waist
    k = np.arange(arm.horizon)[:, None] * arm.dt
    arm_actions = np.zeros((arm.horizon, 7))
    arm_actions[:, 0:1] = slope * k
    pubs["arm"].publish(chunk(rig, arm, arm_actions))
    pubs["base"].publish(chunk(rig, base, np.tile([0.3, 0.5], (base.horizon, 1))))
    time.sleep(0.8)
    waist = np.array([m.data[0] for m in got["arm"]])
    assert len(waist) > 20 and all(len(m.data) == 7 for m in got["arm"])
    assert np.all(np.abs(waist) <= arm.max_velocity()[0] + 1e-9)
    assert np.median(waist[-10:]) == pytest.approx(slope, abs=0.02)
    vx = np.array([m.linear.x for m in got["base"]])
    wz = np.array([m.angular.z for m in got["base"]])
    assert np.all(np.diff(np.concatenate([[0.0], vx])) <= 1.0 * base.dt + 1e-9)  # accel bound
    assert vx[-1] == pytest.approx(0.3) and wz[-1] == pytest.approx(0.5)
    call(clients, "hold")
    time.sleep(0.3)
    assert got["base"][-1].linear.x == 0.0 and got["base"][-1].angular.z == 0.0
    assert all(v == 0.0 for v in got["arm"][-1].data)
