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

import math
import threading

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Twist
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.errors import QwenVLAError
from qwen_vla_ros.nodes.policy_io import (
    ThrottledWarning,
    clock_now,
    load_checkpoint,
    publish_chunk,
    set_torch_threads,
)
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.conversions import (
    ImageConversionError,
    msg_to_rgb,
    stamp_to_sec,
)
from qwen_vla_ros.ros.markers import waypoint_markers
from qwen_vla_ros.runtime.follower import FollowerConfig, PurePursuit
from qwen_vla_ros.runtime.inference import InferenceWorker, LatencyStats
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.navigation import (
    Navigator,
    NavState,
    Pose2D,
    PoseHistory,
    plan_from_chunk,
    quaternion_from_yaw,
    yaw_from_quaternion,
)
from qwen_vla_ros.runtime.observation import Rejection
from qwen_vla_ros.runtime.policy_loop import PolicyLoop, Request, stamp_or


def _d(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text)


class NavigationNode(Node):
    def __init__(self, policy=None, **kwargs) -> None:
        super().__init__("navigation_node", **kwargs)
        p = self.declare_parameter
        p("checkpoint", "", _d("policy checkpoint directory"))
        self.spec = load_embodiment(p("embodiment", "vln", _d("a waypoints embodiment")).value)
        if self.spec.kind != "waypoints":
            raise ValueError(f"embodiment '{self.spec.name}' is {self.spec.kind}, not waypoints")
        device = p("device", "cpu", _d("torch device")).value
        dtype = p("dtype", "float32", _d("float32 or bfloat16")).value
        instruction = p("instruction", "", _d("instruction; also on ~/instruction")).value
        rate = float(p("inference_rate_hz", 1.0, _d("new plans per second")).value)
        self.max_obs_age = float(p("max_observation_age", 0.5, _d("s; older camera (or "
                                   "depth) -> no inference, zero velocity")).value)
        self.max_odom_age = float(p("max_odom_age", 0.3, _d("s; older odometry -> zero "
                                                             "velocity")).value)
        self.steps = int(p("flow_steps", 10, _d("Euler steps per chunk")).value)
        seed = int(p("seed", 0, _d("base seed; chunk i uses seed + i")).value)
        threads = int(p("torch_threads", 0, _d("CPU threads for torch (0 = default)")).value)
        hist_n = int(p("history_frames", 4, _d("past frames given to the model")).value)
        hist_dt = float(p("history_period_s", 1.0, _d("s between past frames")).value)
        pose_source = p("pose_source", "odom", _d("odom (nav_msgs/Odometry) or tf")).value
        self.odom_frame = p("odom_frame", "odom", _d("fixed frame of the plan (tf: parent)")
                            ).value
        self.base_frame = p("base_frame", "base_link", _d("robot frame (tf: child)")).value
        if pose_source not in ("odom", "tf"):
            raise ValueError(f"pose_source must be odom or tf, got {pose_source!r}")
        cam_topic = p("camera_topic", "front/image_raw", _d("RGB camera topic")).value
        compressed = bool(p("camera_compressed", False, _d("camera is CompressedImage")).value)
        depth_topic = p("depth_topic", "", _d("depth image topic ('' = none)")).value
        self.stop_threshold = float(p("stop_threshold", 0.5, _d("stop flag >= this: stop")
                                      ).value)
        self.publish_goal = bool(p("publish_goal", True, _d("publish goal_pose in POLICY")
                                   ).value)
        self.follow = bool(p("follower", True, _d("drive cmd_vel with the built-in "
                                                  "pure-pursuit follower")).value)
        control_rate = float(p("control_rate_hz", 20.0, _d("follower rate")).value)
        self.teleop_timeout = float(p("teleop_timeout", 0.5, _d("s; older teleop_cmd_vel -> "
                                                                "zero")).value)
        cfg = FollowerConfig(
            lookahead=float(p("lookahead", 0.4, _d("pure pursuit lookahead (m)")).value),
            max_linear=float(p("max_linear", 0.4, _d("m/s")).value),
            max_angular=float(p("max_angular", 1.2, _d("rad/s")).value),
            max_linear_accel=float(p("max_linear_accel", 0.8, _d("m/s^2")).value),
            max_angular_accel=float(p("max_angular_accel", 3.0, _d("rad/s^2")).value),
            goal_tolerance=float(p("goal_tolerance", 0.12, _d("m")).value))
        for name, v in (("inference_rate_hz", rate), ("control_rate_hz", control_rate),
                        ("max_observation_age", self.max_obs_age),
                        ("max_odom_age", self.max_odom_age)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be > 0, got {v}")
        self.follower = PurePursuit(cfg)
        self.control_dt = 1.0 / control_rate
        set_torch_threads(threads)
        self.policy_error = ""
        try:
            if policy is None:
                policy = load_checkpoint(self.get_parameter("checkpoint").value, device,
                                         dtype, self.get_logger())
            policy.spec(self.spec.name)  # the checkpoint must know this embodiment
        except (ValueError, QwenVLAError, OSError) as exc:
            # As policy_node's failed configure: say why, stay up, never drive by itself.
            policy, self.policy_error = None, f"no policy: {exc}"
            self.get_logger().error(f"{self.policy_error}; navigation holds (zero velocity "
                                    "in POLICY) until restarted with a valid checkpoint")
        self.policy = policy
        self.loop = PolicyLoop(self.spec, self.max_obs_age, seed=seed, history_frames=hist_n,
                               history_period=hist_dt)
        self.poses = PoseHistory(window=10.0)
        self.navigator = Navigator()
        self.mode = Mode.HOLD
        self.status = ""
        self.latency = LatencyStats()
        self.chunks = 0
        self._lock = threading.Lock()
        self._teleop: tuple[float, float, float] | None = None  # (time, v, w)
        self._depth_stamp: float | None = None if depth_topic else math.inf
        self._warn = ThrottledWarning(self.get_logger())

        self.cmd_pub = self.create_publisher(Twist, "cmd_vel", qos.COMMAND)
        self.path_pub = self.create_publisher(Path, "~/waypoints", qos.COMMAND)
        self.goal_pub = self.create_publisher(PoseStamped, "goal_pose", qos.COMMAND)
        self.marker_pub = self.create_publisher(MarkerArray, "~/markers", qos.COMMAND)
        self.status_pub = self.create_publisher(String, "~/status", qos.LATCHED)
        self.chunk_pub = self.create_publisher(JointTrajectory, "~/action_chunk", qos.COMMAND)
        self.info_pub = self.create_publisher(String, "~/observation_info", qos.COMMAND)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.COMMAND)
        self.create_subscription(CompressedImage if compressed else Image, cam_topic,
                                 self._image_cb(compressed), qos.SENSOR)
        if depth_topic:
            self.create_subscription(Image, depth_topic, self._depth_cb, qos.SENSOR)
        if pose_source == "odom":
            self.create_subscription(Odometry, "odom", self._odom_cb, qos.SENSOR)
        else:
            from tf2_msgs.msg import TFMessage

            self.create_subscription(TFMessage, "/tf", self._tf_cb, 100)
        self.create_subscription(String, "~/instruction", self._instruction_cb, qos.COMMAND)
        self.create_subscription(String, "mode", self._mode_cb, qos.LATCHED)
        self.create_subscription(Twist, "teleop_cmd_vel", self._teleop_cb, qos.COMMAND)
        self.worker = InferenceWorker(self._infer, self._on_chunk, self._on_error)
        self.create_timer(1.0 / rate, self._guard(self._inference_tick))
        self.create_timer(self.control_dt, self._guard(self._control_tick))
        self.create_timer(1.0, self._publish_diagnostics)
        if instruction.strip():
            self._set_instruction(instruction)
        self._set_status("IDLE: no instruction yet" if not instruction.strip() else "NAVIGATING")
        if self.policy_error:
            self._set_status(f"ERROR: {self.policy_error}")

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
                self._send(0.0, 0.0)
        return tick

    def _set_status(self, text: str) -> None:
        if text != self.status:
            self.status = text
            self.status_pub.publish(String(data=text))
            self.get_logger().info(f"status: {text}")

    def _after_navigator(self, before: NavState) -> None:
        """Report a STOP; on entering it, also end a Nav2 goal: with Nav2 driving, send the
        robot's own pose as the goal, which Nav2 reaches at once."""
        if self.navigator.state is not NavState.STOPPED:
            return
        latest = self.poses.latest()
        if (before is not NavState.STOPPED and not self.follow and self.publish_goal
                and self.mode is Mode.POLICY and latest is not None):
            pose = latest[1]
            self.goal_pub.publish(self._pose_msg(pose.x, pose.y, pose.yaw,
                                                 self._header()))
        self._set_status(f"STOPPED: {self.navigator.reason}")

    def _header(self):
        from std_msgs.msg import Header

        return Header(frame_id=self.odom_frame, stamp=self.get_clock().now().to_msg())

    @staticmethod
    def _pose_msg(x: float, y: float, yaw: float, header) -> PoseStamped:
        ps = PoseStamped(header=header)
        ps.pose.position.x, ps.pose.position.y = float(x), float(y)
        o = ps.pose.orientation
        o.x, o.y, o.z, o.w = quaternion_from_yaw(float(yaw))
        return ps

    def _send(self, v: float, w: float) -> None:
        if not self.follow and self.mode is Mode.POLICY:
            return  # Nav2 drives; HOLD / TELEOP still own cmd_vel
        msg = Twist()
        msg.linear.x, msg.angular.z = float(v), float(w)
        self.cmd_pub.publish(msg)

    # ---- inputs -------------------------------------------------------------------------
    def _image_cb(self, compressed: bool):
        cam = self.spec.cameras[0]

        def cb(msg) -> None:
            try:
                rgb = msg_to_rgb(msg, compressed)
            except ImageConversionError as exc:
                self._warn("img", f"camera frame rejected: {exc}")
                return
            with self._lock:
                self.loop.add_image(cam, rgb, stamp_or(stamp_to_sec(msg.header.stamp),
                                                       self.now()))
        return cb

    def _depth_cb(self, msg: Image) -> None:
        self._depth_stamp = stamp_or(stamp_to_sec(msg.header.stamp), self.now())

    def _odom_cb(self, msg: Odometry) -> None:
        if msg.header.frame_id:
            self.odom_frame = msg.header.frame_id
        self._add_pose(msg.header.stamp, msg.pose.pose.position, msg.pose.pose.orientation)

    def _tf_cb(self, msg) -> None:
        for tf in msg.transforms:
            if (tf.header.frame_id.lstrip("/") == self.odom_frame
                    and tf.child_frame_id.lstrip("/") == self.base_frame):
                self._add_pose(tf.header.stamp, tf.transform.translation, tf.transform.rotation)

    def _add_pose(self, stamp, position, q) -> None:
        pose = Pose2D(position.x, position.y, yaw_from_quaternion(q.x, q.y, q.z, q.w))
        with self._lock:
            reason = self.poses.add(stamp_or(stamp_to_sec(stamp), self.now()), pose)
        if reason:
            self._warn("odom", f"odometry rejected: {reason}")

    def _instruction_cb(self, msg: String) -> None:
        if not msg.data.strip():
            self._warn("instr", "empty instruction ignored")
            return
        self._set_instruction(msg.data)

    def _set_instruction(self, text: str) -> None:
        with self._lock:
            self.loop.set_instruction(text)
            self.navigator.new_instruction()
            self.follower.clear()
        self.get_logger().info(f"instruction: {text.strip()!r}")
        self._set_status("NAVIGATING")

    def _mode_cb(self, msg: String) -> None:
        try:
            mode = Mode.parse(msg.data)
        except ValueError as exc:
            self._warn("mode", str(exc))
            return
        if mode is not self.mode:
            self.mode = mode
            self.follower.reset_velocity()
            self.get_logger().info(f"mode {mode.value}")

    def _teleop_cb(self, msg: Twist) -> None:
        v, w = float(msg.linear.x), float(msg.angular.z)
        if not (math.isfinite(v) and math.isfinite(w)):
            self._warn("teleop", "teleop_cmd_vel with NaN/inf ignored")
            return
        self._teleop = (self.now(), v, w)

    # ---- freshness ----------------------------------------------------------------------
    def _stale(self, now: float) -> str | None:
        latest = self.poses.latest()
        if latest is None:
            return "no odometry yet"
        if now - latest[0] > self.max_odom_age:
            return f"odometry is {(now - latest[0]) * 1e3:.0f} ms old"
        cam = self.loop.images.stamps().get(self.spec.cameras[0])
        if cam is None:
            return "no camera image yet"
        if now - cam > self.max_obs_age:
            return f"camera is {(now - cam) * 1e3:.0f} ms old"
        if self._depth_stamp is None or now - self._depth_stamp > self.max_obs_age:
            return "depth is missing or stale"
        return None

    # ---- inference ----------------------------------------------------------------------
    def _inference_tick(self) -> None:
        # The model plans only while it drives (POLICY) and has somewhere to go.
        if (self.mode is not Mode.POLICY or self.navigator.state is not NavState.NAVIGATING
                or not self.worker.idle() or self.policy is None):
            return
        now = self.now()
        stale = self._stale(now)
        if stale:
            self._warn("infer", f"not inferring: {stale}")
            return
        with self._lock:
            request = self.loop.request(now)
        if isinstance(request, Rejection):
            self._warn("infer", str(request))
            return
        self.worker.submit(request)

    def _infer(self, request: Request):
        return self.policy.predict(request.observation, seed=request.seed, steps=self.steps)

    def _on_chunk(self, request: Request, chunk) -> None:
        with self._lock:
            reason = self.loop.accept(request, chunk)
            if reason:
                self.get_logger().error(reason)
                return
            pose = self.poses.at(chunk.stamp)
        self.latency.add(chunk.timing_ms.get("total", 0.0))
        publish_chunk(self.chunk_pub, self.info_pub, self.spec.action_names, chunk, request,
                      self.steps)
        self.chunks += 1
        if isinstance(pose, Rejection):
            self._warn("plan", f"plan dropped: {pose}")
            return
        plan = plan_from_chunk(chunk.actions, self.spec.action_names, pose, chunk.stamp,
                               self.stop_threshold, self.spec.lower(), self.spec.upper())
        if plan.clipped:
            self._warn("clip", f"{plan.clipped} predicted values outside the embodiment's "
                               "limits were clipped to them")
        with self._lock:
            before = self.navigator.state
            taken = self.navigator.offer(plan)
            current = self.poses.latest()
            if taken and self.navigator.plan is not None and current is not None:
                self.follower.set_path(plan.waypoints, current[1])
            elif self.navigator.state is NavState.STOPPED:
                self.follower.clear()
        if not taken:
            return
        self._publish_plan(plan, current[1] if current else None)
        self._after_navigator(before)

    def _on_error(self, request, exc: BaseException) -> None:
        self._warn("infer", f"inference failed: {type(exc).__name__}: {exc}")

    def _publish_plan(self, plan, robot) -> None:
        header = self._header()
        wps = [] if plan.stop_now else plan.waypoints
        path = Path(header=header, poses=[self._pose_msg(w[0], w[1], w[2], header)
                                          for w in wps])
        self.path_pub.publish(path)
        if path.poses and self.publish_goal and self.mode is Mode.POLICY:
            self.goal_pub.publish(path.poses[-1])
        xy = (robot.x, robot.y) if robot is not None else (0.0, 0.0)
        self.marker_pub.publish(waypoint_markers(wps, self.odom_frame, header.stamp,
                                                 self.status or "", xy))

    # ---- control ------------------------------------------------------------------------
    def _control_tick(self) -> None:
        now = self.now()
        if self.mode is Mode.HOLD:
            self._send(0.0, 0.0)
            return
        if self.mode is Mode.TELEOP:
            t = self._teleop
            if t is not None and now - t[0] <= self.teleop_timeout:
                self._send(t[1], t[2])
            else:
                self._send(0.0, 0.0)
            return
        stale = self._stale(now)  # POLICY from here on
        if stale:
            self.follower.reset_velocity()
            self._send(0.0, 0.0)
            self._set_status(f"STALE: {stale}")
            return
        with self._lock:
            state = self.navigator.state
            latest = self.poses.latest()
            if state is not NavState.NAVIGATING or self.follower.path is None:
                v, w, done = 0.0, 0.0, False
            else:
                v, w, done = self.follower.step(latest[1], self.control_dt)
                if done:
                    self.navigator.reached_end()
        self._send(v, w)
        self._after_navigator(state)
        if self.navigator.state is NavState.NAVIGATING:
            self._set_status("NAVIGATING")

    # ---- diagnostics --------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = self.now()
        st = DiagnosticStatus(name="qwen_vla_ros: navigation", hardware_id=self.spec.name)
        stale = self._stale(now)
        st.level = (DiagnosticStatus.ERROR if self.policy is None else
                    DiagnosticStatus.WARN if stale else DiagnosticStatus.OK)
        st.message = f"{self.status}" + (f" ({stale})" if stale else "")
        latest = self.poses.latest()
        p50, p99 = self.latency.percentile(50), self.latency.percentile(99)
        st.values = [
            KeyValue(key="mode", value=self.mode.value),
            KeyValue(key="state", value=self.navigator.state.value),
            KeyValue(key="odom_age_ms",
                     value="n/a" if latest is None else f"{(now - latest[0]) * 1e3:.0f}"),
            KeyValue(key="inference_ms_p50", value="n/a" if p50 is None else f"{p50:.1f}"),
            KeyValue(key="inference_ms_p99", value="n/a" if p99 is None else f"{p99:.1f}"),
            KeyValue(key="chunks", value=str(self.chunks)),
        ]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def destroy_node(self) -> None:
        self.worker.stop()
        super().destroy_node()


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(NavigationNode, args)


if __name__ == "__main__":
    main()
