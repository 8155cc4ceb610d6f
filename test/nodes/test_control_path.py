"""Real rclpy nodes in one process: sensors -> policy_node -> trajectory_adapter, with
mode_manager switching. Assertions are on the messages the nodes publish.

The rig is the simulator: each 20 ms of its (wall) timer it publishes what it measured at t,
then /clock t, and every node runs on that clock. A loaded machine slows the rig and with it
the nodes' time, so sensors never look stale only because the test process was starved."""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time  # noqa: E402
from conftest import spinning, wait_for  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from qwen_vla_ros.embodiment.spec import load_embodiment  # noqa: E402
from qwen_vla_ros.ros import qos  # noqa: E402
from qwen_vla_ros.ros.conversions import rgb_to_image, sec_to_stamp  # noqa: E402

pytestmark = pytest.mark.ros
EMB = "vx300s_single"


class Rig:
    """Stands in for cameras and the arm driver; records what the stack publishes."""

    def __init__(self, node, spec):
        self.node, self.spec = node, spec
        self.cam_pubs = {c: node.create_publisher(Image, f"{c}/image_raw", qos.SENSOR)
                         for c in spec.cameras}
        self.js_pub = node.create_publisher(JointState, "joint_states", qos.SENSOR)
        self.instr_pub = node.create_publisher(String, "/policy_node/instruction", qos.COMMAND)
        self.chunks: list[JointTrajectory] = []
        self.commands: list[tuple[float, JointTrajectory]] = []
        self.modes: list[str] = []
        self.diagnostics: list[DiagnosticArray] = []
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append,
                                 qos.COMMAND)
        node.create_subscription(JointTrajectory, "/policy_node/action_chunk",
                                 self.chunks.append, qos.COMMAND)
        node.create_subscription(JointTrajectory, "joint_trajectory",
                                 lambda m: self.commands.append((self.sim_t, m)),
                                 qos.COMMAND)
        node.create_subscription(String, "/mode_manager/mode",
                                 lambda m: self.modes.append(m.data), qos.LATCHED)
        self.clients = {n: node.create_client(Trigger, f"/mode_manager/{n}")
                        for n in ("engage_teleop", "engage_policy", "hold")}
        self.pose = np.array([0.1, -0.2, 0.3, 0.0, 0.2, 0.0, -0.6213])  # gripper closed (rad)
        self.cameras_on = True
        self.nan_joints = False
        rng = np.random.default_rng(0)
        self.frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        self.sim_t, self.steps = 100.0, 0
        self.clock_pub = node.create_publisher(Clock, "/clock", 10)
        node.create_timer(0.02, self.tick)

    def tick(self):
        """20 ms: joint states (50 Hz) and cameras (every 3rd tick) stamped t, then /clock."""
        self.steps += 1
        self.sim_t = round(self.sim_t + 0.02, 6)
        self.publish_joints()
        if self.steps % 3 == 0:
            self.publish_cameras()
        self.clock_pub.publish(Clock(clock=self.stamp()))

    def stamp(self):
        return sec_to_stamp(self.sim_t, Time)

    def publish_cameras(self):
        if self.cameras_on:
            for pub in self.cam_pubs.values():
                pub.publish(rgb_to_image(self.frame, Image, stamp=self.stamp()))

    def publish_joints(self):
        names = [d.joint for d in self.spec.action]
        pos = np.full(7, np.nan) if self.nan_joints else self.pose
        msg = JointState(name=names, position=pos.tolist())
        msg.header.stamp = self.stamp()
        self.js_pub.publish(msg)


def build_stack(tiny_policy, policy_params=(), adapter_params=()):
    """policy_node -> trajectory_adapter, mode_manager and the rig, on the rig's sim time
    (rclpy initialised by the caller); ``*_params``: more parameter overrides."""
    from qwen_vla_ros.nodes.mode_manager import ModeManager
    from qwen_vla_ros.nodes.policy_node import PolicyNode
    from qwen_vla_ros.nodes.trajectory_adapter import TrajectoryAdapter

    spec = load_embodiment(EMB)
    sim = Parameter("use_sim_time", value=True)
    policy = PolicyNode(policy=tiny_policy, parameter_overrides=[
        sim, Parameter("embodiment", value=EMB), Parameter("inference_rate_hz", value=10.0),
        Parameter("instruction", value="pick up the cube"),
        Parameter("max_observation_age", value=0.3), Parameter("torch_threads", value=1),
        *policy_params])
    adapter = TrajectoryAdapter(
        cli_args=["--ros-args", "-r", "/trajectory_adapter/action_chunk:=/policy_node/"
                  "action_chunk", "-r", "mode:=/mode_manager/mode"],
        parameter_overrides=[sim, Parameter("embodiment", value=EMB), *adapter_params])
    modes = ModeManager(parameter_overrides=[sim])
    rig_node = rclpy.create_node("rig")
    rig = Rig(rig_node, spec)
    rig.adapter = adapter
    return spec, rig, (policy, adapter, modes, rig_node)


@pytest.fixture(scope="module")
def stack(tiny_policy):
    rclpy.init()
    spec, rig, (policy, adapter, modes, rig_node) = build_stack(tiny_policy)
    with spinning(policy, adapter, modes, rig_node) as ex:
        yield ex, rig, spec, policy
    for n in (policy, adapter, modes, rig_node):
        n.destroy_node()
    rclpy.shutdown()


def spin_until(_ex, cond, timeout=20.0):
    """Poll ``cond`` while the executor spins in its own thread."""
    return wait_for(cond, timeout)


def ticks_pass(node, n: int, attr: str = "ticks", timeout: float = 30.0) -> None:
    """Wait until ``node`` ran ``n`` more of its control or inference ticks: a window counted
    in the node's own work, which a loaded machine stretches but cannot shorten."""
    start = getattr(node, attr)
    assert wait_for(lambda: getattr(node, attr) >= start + n, timeout), (attr, n)


def call(ex, rig, name):
    from qwen_vla_ros.ros.services import call_trigger

    return call_trigger(rig.clients[name])


def test_policy_publishes_stamped_chunks_in_embodiment_order(stack):
    ex, rig, spec, _ = stack
    assert spin_until(ex, lambda: len(rig.chunks) >= 2), "no chunk published"
    msg = rig.chunks[-1]
    assert list(msg.joint_names) == spec.action_names
    assert len(msg.points) == spec.horizon
    t = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points[:3]]
    np.testing.assert_allclose(t, [0.0, 0.02, 0.04], atol=1e-9)
    assert msg.header.stamp.sec > 0
    assert all(np.isfinite(p.positions).all() for p in msg.points)


def test_hold_publishes_nothing_then_policy_ramps_from_measured_pose(stack):
    ex, rig, spec, _ = stack
    assert spin_until(ex, lambda: rig.modes and rig.modes[-1] == "HOLD")
    ticks_pass(rig.adapter, 25, "_ticks")  # 0.5 s of the adapter's 50 Hz control loop
    assert rig.commands == [], "commands published in HOLD"
    assert call(ex, rig, "engage_policy").success
    assert spin_until(ex, lambda: len(rig.commands) >= 30), "no commands in POLICY"
    assert rig.modes[-1] == "POLICY"
    lower, upper, vmax = spec.lower(), spec.upper(), spec.max_velocity()
    g = spec.dim("gripper").gripper
    measured = rig.pose.copy()
    measured[6] = g.to_normalised(measured[6])
    prev = measured
    for _, msg in rig.commands[:30]:
        assert list(msg.joint_names) == [d.joint for d in spec.action]
        q = np.array(msg.points[0].positions)
        q[6] = g.to_normalised(q[6])  # back to embodiment units
        assert np.all(q >= lower - 1e-9) and np.all(q <= upper + 1e-9)
        assert np.all(np.abs(q - prev) <= vmax * spec.dt + 1e-6), "jump beyond one step"
        prev = q


def last_diag(rig):
    """The policy's newest /diagnostics status (adapters publish there too), or ("", {})."""
    for arr in reversed(rig.diagnostics):
        for status in arr.status:
            if status.name.endswith(": policy"):
                return status.message, {kv.key: kv.value for kv in status.values}
    return "", {}


def test_stale_camera_stops_inference_and_diagnostics_say_why(stack):
    ex, rig, _, policy = stack
    assert spin_until(ex, lambda: len(rig.chunks) >= 1), "never inferred"  # cameras were live
    rig.cameras_on = False
    assert spin_until(ex, lambda: "stale" in last_diag(rig)[0], 10), \
        "diagnostics never reported the stale camera"
    count = len(rig.chunks)
    ticks_pass(policy, 10)  # 1 s of 10 Hz inference ticks
    assert len(rig.chunks) <= count + 1, "kept inferring on stale camera data"
    message, values = last_diag(rig)
    assert "camera 'cam_high' is stale" in message or "camera 'cam_wrist' is stale" in message
    assert float(values["inference_ms_p50"]) > 0
    rig.cameras_on = True
    assert spin_until(ex, lambda: len(rig.chunks) > count + 1), "did not recover"


def test_nan_joints_and_empty_instruction_rejected(stack):
    ex, rig, _, policy = stack
    assert wait_for(lambda: rig.instr_pub.get_subscription_count() > 0, 10)
    rig.instr_pub.publish(String(data="   "))
    # Waits for the callback itself (a counter): the status text it set is overwritten by the
    # next inference tick, so it is no event to wait on.
    assert spin_until(ex, lambda: policy.loop.instructions_ignored == 1, 10), policy.status
    assert policy.loop.instruction == "pick up the cube"
    rig.nan_joints = True
    assert spin_until(ex, lambda: "non-finite" in last_diag(rig)[0]
                      or "stale" in last_diag(rig)[0], 10)
    count = len(rig.chunks)
    ticks_pass(policy, 10)
    assert len(rig.chunks) <= count + 1, "kept inferring with NaN joints"
    rig.nan_joints = False
    assert spin_until(ex, lambda: len(rig.chunks) > count)


def test_switching_out_of_policy_is_immediate(stack):
    ex, rig, _, _ = stack
    assert call(ex, rig, "hold").success
    assert spin_until(ex, lambda: rig.modes[-1] == "HOLD")
    ticks_pass(rig.adapter, 10, "_ticks")  # a command already on its way lands
    n = len(rig.commands)
    ticks_pass(rig.adapter, 25, "_ticks")
    assert len(rig.commands) == n, "commands after HOLD"
