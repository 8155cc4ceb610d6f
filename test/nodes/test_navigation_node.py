"""navigation_node, real nodes over DDS: waypoints in the odom frame, Nav2 goal, modes,
staleness, the stop decision; and closed loop with base_sim (MuJoCo).

The policies are the real tiny architecture; their normalisation statistics pin the output
(std ~0), so a test knows what the model will say: "1 m ahead, 0.5 m left" or "stop".
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from conftest import spinning, wait_for  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped, Twist  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from qwen_vla_ros.ros import qos  # noqa: E402
from qwen_vla_ros.ros.conversions import rgb_to_image  # noqa: E402
from qwen_vla_ros.runtime.navigation import quaternion_from_yaw  # noqa: E402

pytestmark = pytest.mark.ros
AHEAD = (1.0, 0.5)  # what the "go" policy predicts, robot frame


def pinned_policy(x: float, y: float, stop: float):
    from qwen_vla_ros.model.normalize import NormStats
    from qwen_vla_ros.model.presets import build_preset

    policy = build_preset("tiny", ["vln"], seed=0)
    stats = policy.norm_stats.to_dict()
    stats["vln"]["action"] = {"mean": [x, y, 0.0, stop], "std": [0.0] * 4}
    policy.norm_stats = NormStats(stats)
    return policy


@pytest.fixture(scope="module")
def policies():
    return {"go": pinned_policy(*AHEAD, 0.0), "stop": pinned_policy(0.0, 0.0, 1.0)}


def nav_params(**extra):
    base = {"instruction": "go to the red box", "inference_rate_hz": 4.0,
            "torch_threads": 1, "history_frames": 2, "history_period_s": 0.5}
    base.update(extra)
    return [Parameter(k, value=v) for k, v in base.items()]


class Rig:
    """Test-side publishers (odometry, camera, mode, joystick) and recorders."""

    def __init__(self, node) -> None:
        self.node = node
        self.pose = (1.0, 2.0, math.pi / 2)
        self.odom_on = self.cam_on = True
        self.nan_odom = False
        self.odom_pub = node.create_publisher(Odometry, "/odom", qos.SENSOR)
        from tf2_msgs.msg import TFMessage

        self.tf_pub = node.create_publisher(TFMessage, "/tf", 100)
        self._tf_cls = TFMessage
        self.tf_paths = []
        node.create_subscription(Path, "/nav_tf/waypoints", self.tf_paths.append, qos.COMMAND)
        self.cam_pub = node.create_publisher(Image, "/front/image_raw", qos.SENSOR)
        self.mode_pub = node.create_publisher(String, "/mode_manager/mode", qos.LATCHED)
        self.teleop_pub = node.create_publisher(Twist, "/teleop_cmd_vel", qos.COMMAND)
        self.instr_pub = node.create_publisher(String, "/navigation_node/instruction",
                                               qos.COMMAND)
        self.cmds, self.status, self.paths, self.goals, self.diags = [], [], [], [], []
        node.create_subscription(Twist, "/cmd_vel", self.cmds.append, qos.COMMAND)
        node.create_subscription(String, "/navigation_node/status",
                                 lambda m: self.status.append(m.data), qos.LATCHED)
        node.create_subscription(Path, "/navigation_node/waypoints", self.paths.append,
                                 qos.COMMAND)
        node.create_subscription(PoseStamped, "/goal_pose", self.goals.append, qos.COMMAND)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append,
                                 qos.COMMAND)
        self.frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        node.create_timer(0.05, self._odom)
        node.create_timer(0.1, self._cam)

    def _odom(self) -> None:
        if not self.odom_on:
            return
        msg = Odometry()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = "odom"
        x, y, yaw = self.pose
        msg.pose.pose.position.x = math.nan if self.nan_odom else x
        msg.pose.pose.position.y = y
        o = msg.pose.pose.orientation
        o.x, o.y, o.z, o.w = quaternion_from_yaw(yaw)
        self.odom_pub.publish(msg)
        from geometry_msgs.msg import TransformStamped

        tf = TransformStamped()
        tf.header = msg.header
        tf.child_frame_id = "base_link"
        tf.transform.translation.x = msg.pose.pose.position.x
        tf.transform.translation.y = y
        tf.transform.rotation = msg.pose.pose.orientation
        other = TransformStamped()  # an unrelated transform on /tf is ignored
        other.header.frame_id, other.child_frame_id = "base_link", "camera"
        other.transform.rotation.w = 1.0
        self.tf_pub.publish(self._tf_cls(transforms=[other, tf]))

    def _cam(self) -> None:
        if self.cam_on:
            self.cam_pub.publish(rgb_to_image(self.frame, Image,
                                              stamp=self.node.get_clock().now().to_msg()))

    def moving(self) -> bool:
        return bool(self.cmds) and (abs(self.cmds[-1].linear.x) > 1e-3
                                    or abs(self.cmds[-1].angular.z) > 1e-3)

    def still(self, seconds: float = 0.5) -> bool:
        """The node's next ``seconds`` worth of control ticks (20 Hz, one cmd_vel each) all
        command zero: counted in the node's commands, not in wall time. Counted from its first
        zero command: commands sent before the change that stopped it may still be arriving."""
        if not wait_for(lambda: bool(self.cmds) and self.cmds[-1].linear.x == 0.0
                        and self.cmds[-1].angular.z == 0.0, 10):
            return False
        n, k = len(self.cmds), max(1, round(seconds * 20))
        if not wait_for(lambda: len(self.cmds) >= n + k, 10 + 4 * seconds):
            return False
        return all(c.linear.x == 0.0 and c.angular.z == 0.0 for c in self.cmds[n:n + k])


@pytest.fixture(scope="module")
def stack(policies):
    from qwen_vla_ros.nodes.navigation_node import NavigationNode

    rclpy.init()
    nav = NavigationNode(policy=policies["go"], parameter_overrides=nav_params(),
                         cli_args=["--ros-args", "-r", "mode:=/mode_manager/mode",
                                   "-r", "odom:=/odom", "-r", "cmd_vel:=/cmd_vel",
                                   "-r", "teleop_cmd_vel:=/teleop_cmd_vel",
                                   "-r", "goal_pose:=/goal_pose"])
    # The same node reading its pose from /tf instead, in Nav2 mode (no follower), its outputs
    # kept apart.
    nav_tf = NavigationNode(policy=policies["go"],
                            parameter_overrides=[*nav_params(),
                                                 Parameter("pose_source", value="tf"),
                                                 Parameter("follower", value=False)],
                            cli_args=["--ros-args", "-r", "__node:=nav_tf",
                                      "-r", "mode:=/mode_manager/mode",
                                      "-r", "cmd_vel:=/nav_tf/cmd_vel",
                                      "-r", "goal_pose:=/nav_tf/goal_pose"])
    node = rclpy.create_node("rig")
    rig = Rig(node)
    rig.nav_tf = nav_tf
    rig.tf_cmds, rig.tf_goals = [], []
    rig.tf_instr_pub = node.create_publisher(String, "/nav_tf/instruction", qos.COMMAND)
    node.create_subscription(Twist, "/nav_tf/cmd_vel", rig.tf_cmds.append, qos.COMMAND)
    node.create_subscription(PoseStamped, "/nav_tf/goal_pose", rig.tf_goals.append,
                             qos.COMMAND)
    with spinning(nav, nav_tf, node):
        yield nav, rig
    nav.destroy_node()
    nav_tf.destroy_node()
    node.destroy_node()
    rclpy.shutdown()


def set_mode(rig, mode: str) -> None:
    rig.mode_pub.publish(String(data=mode))


def test_waypoints_and_goal_in_the_odom_frame(stack):
    nav, rig = stack
    set_mode(rig, "POLICY")
    assert wait_for(lambda: rig.goals and rig.paths, 15), nav.status
    # Robot at (1, 2) facing +y: 1 m ahead, 0.5 m left = (0.5, 3.0) in odom.
    path = rig.paths[-1]
    assert path.header.frame_id == "odom" and len(path.poses) == 8
    for p in path.poses:
        assert (p.pose.position.x, p.pose.position.y) == pytest.approx((0.5, 3.0), abs=1e-3)
    g = rig.goals[-1].pose.position
    assert (g.x, g.y) == pytest.approx((0.5, 3.0), abs=1e-3)
    assert wait_for(rig.moving, 5)


def test_pose_from_tf_gives_the_same_plan(stack):
    _nav, rig = stack
    set_mode(rig, "POLICY")
    assert wait_for(lambda: rig.tf_paths and rig.tf_paths[-1].poses, 15)
    path = rig.tf_paths[-1]
    assert path.header.frame_id == "odom"
    for p in path.poses:
        assert (p.pose.position.x, p.pose.position.y) == pytest.approx((0.5, 3.0), abs=1e-3)


def test_stale_odometry_or_camera_zero_velocity(stack):
    _nav, rig = stack
    set_mode(rig, "POLICY")
    assert wait_for(rig.moving, 10)
    for flag in ("odom_on", "cam_on"):
        setattr(rig, flag, False)
        assert wait_for(lambda: rig.status and rig.status[-1].startswith("STALE"), 5)
        assert rig.still(0.5), flag
        assert wait_for(lambda: any(st.level == st.WARN for d in rig.diags[-2:]
                                    for st in d.status if "navigation" in st.name), 3)
        setattr(rig, flag, True)
        assert wait_for(rig.moving, 5), f"did not resume after {flag}"


def test_nan_odometry_is_rejected_and_the_node_keeps_running(stack):
    _nav, rig = stack
    set_mode(rig, "POLICY")
    assert wait_for(rig.moving, 10)
    rig.nan_odom = True
    assert wait_for(lambda: rig.status[-1].startswith("STALE"), 5)
    assert rig.still(0.4)
    rig.nan_odom = False
    assert wait_for(rig.moving, 5)


def test_hold_and_teleop_passthrough(stack):
    nav, rig = stack
    set_mode(rig, "HOLD")
    assert wait_for(lambda: nav.mode.value == "HOLD", 3)
    assert rig.still(0.4)
    set_mode(rig, "TELEOP")
    joy = Twist()
    joy.linear.x, joy.angular.z = 0.2, -0.3
    deadline = time.monotonic() + 3
    seen = False
    while time.monotonic() < deadline and not seen:
        rig.teleop_pub.publish(joy)
        time.sleep(0.05)
        seen = any(c.linear.x == pytest.approx(0.2) and c.angular.z == pytest.approx(-0.3)
                   for c in rig.cmds[-5:])
    assert seen
    assert wait_for(lambda: rig.cmds[-1].linear.x == 0.0, 2)  # joystick went quiet -> zero


def test_stop_decision_halts_until_a_new_instruction(stack, policies):
    nav, rig = stack
    rig.nav_tf.policy = policies["stop"]
    try:
        _stop_then_go(nav, rig, policies)
    finally:  # the other tests expect both nodes going: the "go" policy, STOP cleared
        nav.policy = rig.nav_tf.policy = policies["go"]
        rig.instr_pub.publish(String(data="go to the red box"))
        rig.tf_instr_pub.publish(String(data="go to the red box"))
        assert wait_for(lambda: not rig.nav_tf.status.startswith("STOPPED")
                        and not nav.status.startswith("STOPPED"), 10)


def _stop_then_go(nav, rig, policies) -> None:
    set_mode(rig, "POLICY")
    rig.instr_pub.publish(String(data="go to the red box"))
    assert wait_for(rig.moving, 10)
    nav.policy = policies["stop"]
    assert wait_for(lambda: rig.status[-1].startswith("STOPPED"), 10), rig.status[-3:]
    assert rig.still(0.5)
    assert len(rig.paths[-1].poses) == 0  # the plan is cleared
    nav.policy = policies["go"]  # the model would go again, but STOP holds...
    assert rig.still(1.0)
    rig.instr_pub.publish(String(data="now go to the blue sphere"))  # ...until this
    assert wait_for(rig.moving, 10)
    # Nav2 mode: the STOP ended Nav2's goal with one at the robot's own pose...
    assert wait_for(lambda: rig.nav_tf.status.startswith("STOPPED"), 10)
    g = rig.tf_goals[-1].pose.position
    assert (g.x, g.y) == pytest.approx((1.0, 2.0), abs=1e-6)


def test_nav2_mode_never_drives(stack):
    """...and with follower: false it never drives by itself: the only non-zero cmd_vel it
    sent is the joystick's, passed through in TELEOP."""
    _nav, rig = stack
    set_mode(rig, "POLICY")
    assert wait_for(lambda: rig.tf_goals, 15), "Nav2 mode published no goals"
    moving = {(c.linear.x, c.angular.z) for c in rig.tf_cmds} - {(0.0, 0.0)}
    assert moving <= {(0.2, -0.3)}, moving
