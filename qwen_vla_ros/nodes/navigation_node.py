"""navigation_node: camera + odometry + instruction -> waypoints, a Nav2 goal and cmd_vel.

Runs the VLN embodiment of the policy (same observation code as policy_node:
``runtime.policy_loop.PolicyLoop``, with a time-sampled history of past frames), places each
predicted chunk in the odom frame with the odometry pose *at the observation time*
(``runtime.navigation``), and either hands the next goal to Nav2 or drives the base with the
built-in pure-pursuit follower (``runtime.follower``). Obeys mode_manager: POLICY drives,
TELEOP passes a joystick's ``teleop_cmd_vel`` through, HOLD sends zero velocity.

Topics (relative, remappable):
  sub  front/image_raw        sensor_msgs/Image or CompressedImage (``camera_topic``)
  sub  depth/image_raw        optional (``depth_topic``; "" = none): staleness-checked only,
                              this model takes no depth
  sub  odom                   nav_msgs/Odometry (``pose_source: odom``), or
  sub  /tf                    tf2_msgs/TFMessage (``pose_source: tf``): the transform
                              ``odom_frame`` -> ``base_frame`` (published directly, one hop)
  sub  ~/instruction          std_msgs/String (also the ``instruction`` parameter)
  sub  mode                   std_msgs/String (remap to /mode_manager/mode)
  sub  teleop_cmd_vel         geometry_msgs/Twist, passed through in TELEOP
  pub  cmd_vel                geometry_msgs/Twist (``follower: true``)
  pub  ~/waypoints            nav_msgs/Path in the odom frame (every plan)
  pub  goal_pose              geometry_msgs/PoseStamped, the plan's last waypoint, in POLICY
                              only (``publish_goal``; Nav2's /goal_pose convention)
  pub  ~/markers              visualization_msgs/MarkerArray (path, waypoints, goal, status)
  pub  ~/status               std_msgs/String, latched: IDLE | NAVIGATING | STOPPED: reason |
                              STALE: reason | HOLD | TELEOP
  pub  ~/action_chunk         trajectory_msgs/JointTrajectory: the raw prediction (robot frame)
  pub  ~/observation_info     std_msgs/String JSON, as policy_node
  pub  /diagnostics           diagnostic_msgs/DiagnosticArray (1 Hz)
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.errors import QwenVLAError
from qwen_vla_ros.nodes.nav_outputs import NavigationOutputs
from qwen_vla_ros.nodes.policy_io import (
    PolicyHost,
    clock_now,
    open_policy,
)
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.conversions import pose_2d, stamp_to_sec
from qwen_vla_ros.ros.diagnostics import publish_diagnostics
from qwen_vla_ros.ros.params import declare
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.nav_control import NavigationController, NavigationParams
from qwen_vla_ros.runtime.policy_loop import Request, stamp_or


class NavigationNode(Node):
    """Topics, parameters and timers around ``runtime.nav_control.NavigationController``."""

    def __init__(self, policy=None, **kwargs) -> None:
        super().__init__("navigation_node", **kwargs)
        self.params = params = declare(self, NavigationParams)
        self.spec = load_embodiment(params.embodiment)
        self.nav = NavigationController(self.spec, params)
        self.policy_error = ""
        self._given_policy = policy
        try:
            policy = open_policy(policy, params, self.spec.name, self.get_logger())
        except (ValueError, QwenVLAError, OSError) as exc:
            # As policy_node's failed configure: say why, stay up, never drive by itself.
            policy, self.policy_error = None, f"no policy: {exc}"
            self.get_logger().error(f"{self.policy_error}; navigation holds (zero velocity "
                                    "in POLICY) until restarted with a valid checkpoint")
        self.host = PolicyHost(self, self.spec.action_names, params.flow_steps, self._on_chunk)
        self.host.policy = policy
        self._warn = self.host.warn
        self.out = NavigationOutputs(self, params.odom_frame, params.publish_goal, self._warn)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.COMMAND)
        self.host.subscribe_camera(params.camera_topic, params.camera_compressed, "front",
                                   self.nav.add_image)
        if params.depth_topic:
            self.create_subscription(Image, params.depth_topic, self._depth_cb, qos.SENSOR)
        if params.pose_source == "odom":
            self.create_subscription(Odometry, "odom", self._odom_cb, qos.SENSOR)
        else:
            from tf2_msgs.msg import TFMessage

            self.create_subscription(TFMessage, "/tf", self._tf_cb, 100)
        self.create_subscription(String, "~/instruction", self._instruction_cb, qos.COMMAND)
        self.create_subscription(String, "mode", self._mode_cb, qos.LATCHED)
        self.create_subscription(Twist, "teleop_cmd_vel", self._teleop_cb, qos.COMMAND)
        self.create_timer(1.0 / params.inference_rate_hz, self._guard(self._inference_tick))
        self.create_timer(self.nav.control_dt, self._guard(self._control_tick))
        self.create_timer(1.0, self._publish_diagnostics)
        if params.instruction.strip():
            self._set_instruction(params.instruction)
        self._set_status("IDLE: no instruction yet" if not params.instruction.strip()
                         else "NAVIGATING")
        if self.policy_error:
            self._set_status(f"ERROR: {self.policy_error}")

    @property
    def mode(self) -> Mode:
        return self.nav.mode

    @property
    def policy(self):
        return self.host.policy

    @policy.setter
    def policy(self, policy) -> None:
        self.host.policy = policy

    # ---- helpers ------------------------------------------------------------------------
    def now(self) -> float:
        return clock_now(self)

    def _guard(self, fn):
        def tick() -> None:
            try:
                fn()
            except Exception as exc:  # a timer exception would stop the executor
                self._warn(f"tick:{fn.__name__}", f"{fn.__name__} failed, zero velocity: "
                           f"{type(exc).__name__}: {exc}")
                self.out.send(self.nav.stop_velocity())
        return tick

    @property
    def status(self) -> str:
        return self.out.status

    def _set_status(self, text: str) -> None:
        self.out.set_status(text)

    # ---- inputs -------------------------------------------------------------------------
    def _depth_cb(self, msg: Image) -> None:
        self.nav.add_depth(stamp_or(stamp_to_sec(msg.header.stamp), self.now()))

    def _odom_cb(self, msg: Odometry) -> None:
        if msg.header.frame_id:
            self.out.frame = msg.header.frame_id
        self._add_pose(msg.header.stamp, msg.pose.pose.position, msg.pose.pose.orientation)

    def _tf_cb(self, msg) -> None:
        for tf in msg.transforms:
            if (tf.header.frame_id.lstrip("/") == self.out.frame
                    and tf.child_frame_id.lstrip("/") == self.params.base_frame):
                self._add_pose(tf.header.stamp, tf.transform.translation, tf.transform.rotation)

    def _add_pose(self, stamp, position, q) -> None:
        reason = self.nav.add_pose(stamp_or(stamp_to_sec(stamp), self.now()),
                                   pose_2d(position, q))
        if reason:
            self._warn("odom", f"odometry rejected: {reason}")

    def _instruction_cb(self, msg: String) -> None:
        if not msg.data.strip():
            self._warn("instr", "empty instruction ignored")
            return
        self._set_instruction(msg.data)

    def _set_instruction(self, text: str) -> None:
        self.nav.set_instruction(text)
        self.get_logger().info(f"instruction: {text.strip()!r}")
        self._set_status("NAVIGATING")

    def _mode_cb(self, msg: String) -> None:
        try:
            mode = Mode.parse(msg.data)
        except ValueError as exc:
            self._warn("mode", str(exc))
            return
        if self.nav.set_mode(mode):
            self.get_logger().info(f"mode {mode.value}")

    def _teleop_cb(self, msg: Twist) -> None:
        reason = self.nav.set_teleop(self.now(), float(msg.linear.x), float(msg.angular.z))
        if reason:
            self._warn("teleop", reason)

    # ---- inference ----------------------------------------------------------------------
    def _inference_tick(self) -> None:
        if not self.nav.wants_plan() or not self.host.worker.idle() or self.policy is None:
            return
        request = self.nav.request(self.now())
        if isinstance(request, str):
            self._warn("infer", request)
            return
        self.host.worker.submit(request)

    def _on_chunk(self, request: Request, chunk) -> None:
        out = self.nav.on_chunk(request, chunk)
        if out.error:
            self.get_logger().error(out.error)
            return
        self.host.publish(request, chunk)
        self.out.apply(out, self.nav.mode)

    # ---- control ------------------------------------------------------------------------
    def _control_tick(self) -> None:
        self.out.apply(self.nav.control(self.now()), self.nav.mode)

    # ---- diagnostics --------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = self.now()
        stale = self.nav.stale(now)
        latest = self.nav.poses.latest()
        publish_diagnostics(
            self, self.diag_pub, "qwen_vla_ros: navigation", self.spec.name,
            "ERROR" if self.policy is None else "WARN" if stale else "OK",
            self.status + (f" ({stale})" if stale else ""), {
                "mode": self.nav.mode.value, "state": self.nav.navigator.state.value,
                "odom_age_ms": None if latest is None else (now - latest[0]) * 1e3,
                **self.host.diagnostic_values()})

    def destroy_node(self) -> None:
        self.host.release(keep=self._given_policy)
        super().destroy_node()


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(NavigationNode, args)


if __name__ == "__main__":
    main()
