"""velocity_adapter: Float64MultiArray for a joint arm and Twist for a base, real nodes."""

from __future__ import annotations

import json

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Duration, Time  # noqa: E402
from conftest import spinning, wait_for  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
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
    got["mode"] = {}
    for name in ("velocity_adapter", "base_adapter"):
        rig.create_subscription(
            String, f"/{name}/effective_mode",
            lambda m, n=name: got["mode"].__setitem__(n, json.loads(m.data)["mode"]),
            qos.LATCHED)
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
    """Velocities follow one chunk within the limits; when no chunk follows, the policy
    watchdog stops the outputs (zero velocity), and HOLD keeps them at zero."""
    rig, got, pubs, clients = stack
    arm, base = load_embodiment("vx300s_single"), load_embodiment("diff_drive_base")
    # The chunk publishers matched (a message sent before discovery is lost), then POLICY:
    assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 10)
    call(clients, "engage_policy")  # engages once a measured pose is in (engage_timeout)
    # A chunk that arrives before the adapter engaged is dropped (it starts from the measured
    # pose), so: engaged first.
    assert wait_for(lambda: set(got["mode"].values()) == {"POLICY"} and len(got["mode"]) == 2,
                    10), got["mode"]
    slope = 0.2  # rad/s on the waist
    k = np.arange(arm.horizon)[:, None] * arm.dt
    arm_actions = np.zeros((arm.horizon, 7))
    arm_actions[:, 0:1] = slope * k
    n_arm, n_base = len(got["arm"]), len(got["base"])
    pubs["arm"].publish(chunk(rig, arm, arm_actions))
    pubs["base"].publish(chunk(rig, base, np.tile([0.3, 0.5], (base.horizon, 1))))
    # 25 arm ticks (50 Hz) and 15 base ticks (10 Hz), inside one chunk's span of each
    assert wait_for(lambda: len(got["arm"]) > n_arm + 25 and len(got["base"]) > n_base + 15,
                    10), (len(got["arm"]) - n_arm, len(got["base"]) - n_base)
    waist = np.array([m.data[0] for m in got["arm"][n_arm:]])
    assert all(len(m.data) == 7 for m in got["arm"])
    assert np.all(np.abs(waist) <= arm.max_velocity()[0] + 1e-9)
    assert np.median(waist[15:25]) == pytest.approx(slope, abs=0.02)
    vx = np.array([m.linear.x for m in got["base"][n_base:]])
    wz = np.array([m.angular.z for m in got["base"][n_base:]])
    assert np.all(np.diff(np.concatenate([[0.0], vx])) <= 1.0 * base.dt + 1e-9)  # accel bound
    assert np.isclose(vx, 0.3).any() and np.isclose(wz, 0.5).any()
    # No next chunk: the watchdog ends POLICY with zero velocity on both outputs.
    assert wait_for(lambda: got["base"][-1].linear.x == 0.0 and got["base"][-1].angular.z == 0.0
                    and all(v == 0.0 for v in got["arm"][-1].data), 10)
    call(clients, "hold")
    assert got["base"][-1].linear.x == 0.0 and all(v == 0.0 for v in got["arm"][-1].data)
