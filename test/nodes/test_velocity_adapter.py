"""velocity_adapter: Float64MultiArray for a joint arm and Twist for a base, real nodes on a
clock the test steps (/clock, 20 ms at a time, each step waited for): a loaded machine slows
the test, not the adapters' view of time."""

from __future__ import annotations

import json

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Duration, Time  # noqa: E402
from conftest import spinning, wait_for  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from qwen_vla_ros.embodiment.spec import load_embodiment  # noqa: E402
from qwen_vla_ros.ros import qos  # noqa: E402
from qwen_vla_ros.ros.conversions import chunk_to_trajectory, sec_to_stamp  # noqa: E402

pytestmark = pytest.mark.ros
SIM = Parameter("use_sim_time", value=True)
DT = 0.02  # one arm control tick (50 Hz); the base ticks every 5th (10 Hz)


class SteppedClock:
    """/clock the test advances: joint states stamped t go out, then /clock reads t."""

    def __init__(self, node, publish_measurements) -> None:
        self.t = 100.0
        self.pub = node.create_publisher(Clock, "/clock", 10)
        self.publish_measurements = publish_measurements

    def step(self) -> None:
        self.t = round(self.t + DT, 6)
        self.publish_measurements(self.t)
        self.pub.publish(Clock(clock=sec_to_stamp(self.t, Time)))


@pytest.fixture(scope="module")
def stack():
    from qwen_vla_ros.nodes.mode_manager import ModeManager
    from qwen_vla_ros.nodes.velocity_adapter import VelocityAdapter

    rclpy.init()
    remap = ["--ros-args", "-r", "mode:=/mode_manager/mode"]
    arm = VelocityAdapter(cli_args=remap, parameter_overrides=[SIM])
    base = VelocityAdapter(cli_args=[*remap, "-r", "__node:=base_adapter"],
                           parameter_overrides=[SIM,
                                                Parameter("embodiment", value="diff_drive_base"),
                                                Parameter("output", value="twist")])
    modes = ModeManager(parameter_overrides=[SIM])
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

    def publish_js(t: float):
        msg = JointState(name=names, position=[0.0] * 6 + [-0.6213])
        msg.header.stamp = sec_to_stamp(t, Time)
        js.publish(msg)
    clock = SteppedClock(rig, publish_js)
    pubs = {"arm": rig.create_publisher(JointTrajectory, "/velocity_adapter/action_chunk",
                                        qos.COMMAND),
            "base": rig.create_publisher(JointTrajectory, "/base_adapter/action_chunk",
                                         qos.COMMAND)}
    clients = {n: rig.create_client(Trigger, f"/mode_manager/{n}")
               for n in ("engage_policy", "hold")}
    with spinning(arm, base, modes, rig):
        yield clock, got, pubs, clients
    for n in (arm, base, modes, rig):
        n.destroy_node()
    rclpy.shutdown()


def call(clients, name):
    from qwen_vla_ros.ros.services import call_trigger

    assert call_trigger(clients[name]).success


def chunk(clock, spec, actions):
    return chunk_to_trajectory(actions, spec.action_names, spec.dt, JointTrajectory,
                               JointTrajectoryPoint, Duration, stamp=sec_to_stamp(clock.t, Time))


def run_ticks(clock, got, ticks: int) -> None:
    """Advance the clock one arm tick at a time, each after the arm adapter answered the
    previous one (it commands every tick while in POLICY)."""
    for _ in range(ticks):
        n = len(got["arm"])
        clock.step()
        assert wait_for(lambda n=n: len(got["arm"]) > n, 10), f"no arm command at {clock.t}"


def test_velocities_follow_the_chunk_within_limits_and_stop_on_hold(stack):
    """Velocities follow one chunk within the limits; when no chunk follows, the policy
    watchdog stops the outputs (zero velocity), and HOLD keeps them at zero."""
    clock, got, pubs, clients = stack
    arm, base = load_embodiment("vx300s_single"), load_embodiment("diff_drive_base")
    # The chunk publishers matched (a message sent before discovery is lost), then POLICY:
    assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 10)
    clock.step()
    call(clients, "engage_policy")  # engages once a measured pose is in (engage_timeout)
    # A chunk that arrives before the adapter engaged is dropped (it starts from the measured
    # pose), so: engaged first.
    def engaged():
        return set(got["mode"].values()) == {"POLICY"} and len(got["mode"]) == 2

    for _ in range(100):  # each step: engaged within 50 ms of wall time, or the next tick
        clock.step()
        if wait_for(engaged, 0.05):
            break
    assert engaged(), got["mode"]
    slope = 0.2  # rad/s on the waist
    k = np.arange(arm.horizon)[:, None] * arm.dt
    arm_actions = np.zeros((arm.horizon, 7))
    arm_actions[:, 0:1] = slope * k
    n_arm, n_base = len(got["arm"]), len(got["base"])
    pubs["arm"].publish(chunk(clock, arm, arm_actions))
    pubs["base"].publish(chunk(clock, base, np.tile([0.3, 0.5], (base.horizon, 1))))
    # 40 arm ticks (50 Hz) and 8 base ticks (10 Hz), inside one chunk's span of each (1 s)
    run_ticks(clock, got, 40)
    assert wait_for(lambda: len(got["base"]) >= n_base + 8, 10), len(got["base"]) - n_base
    waist = np.array([m.data[0] for m in got["arm"][n_arm:]])
    assert all(len(m.data) == 7 for m in got["arm"])
    assert np.all(np.abs(waist) <= arm.max_velocity()[0] + 1e-9)
    assert np.median(waist[15:35]) == pytest.approx(slope, abs=0.02)
    vx = np.array([m.linear.x for m in got["base"][n_base:]])
    wz = np.array([m.angular.z for m in got["base"][n_base:]])
    assert np.all(np.diff(np.concatenate([[0.0], vx])) <= 1.0 * base.dt + 1e-9)  # accel bound
    assert np.isclose(vx, 0.3).any() and np.isclose(wz, 0.5).any()
    # No next chunk: the watchdog ends POLICY with zero velocity on both outputs.
    def stopped():
        return (got["base"][-1].linear.x == 0.0 and got["base"][-1].angular.z == 0.0
                and all(v == 0.0 for v in got["arm"][-1].data)
                and set(got["mode"].values()) == {"HOLD"})

    for _ in range(100):  # 2 s of this clock: past the chunks' span (1 s) and the timeouts
        clock.step()
    assert wait_for(stopped, 10), (got["mode"], got["arm"][-1].data, got["base"][-1])
    call(clients, "hold")
    assert got["base"][-1].linear.x == 0.0 and all(v == 0.0 for v in got["arm"][-1].data)
