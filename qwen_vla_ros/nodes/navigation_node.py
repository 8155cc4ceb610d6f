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
  sub  scan                   optional (``scan_topic``; "" = none): sensor_msgs/LaserScan
                              from the base centre, x ahead: the obstacle stop in POLICY
                              (``runtime.obstacle``); stale like the camera
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
  pub  ~/status               std_msgs/String, latched: IDLE | NAVIGATING |
                              NAVIGATING: stop proposed ... | STOPPED: reason |
                              STALE: reason | BLOCKED: obstacle ... | HOLD | TELEOP
  pub  ~/action_chunk         trajectory_msgs/JointTrajectory: the raw prediction (robot frame)
  pub  ~/observation_info     std_msgs/String JSON, as policy_node
  pub  /diagnostics           diagnostic_msgs/DiagnosticArray (1 Hz)
"""

from __future__ import annotations

import math

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import Image, LaserScan
from std_msgs.msg import String

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.nodes.nav_outputs import NavigationOutputs
from qwen_vla_ros.nodes.policy_io import (
    PolicyHost,
    clock_now,
    guarded,
    open_policy_or_none,
)
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.conversions import (
    pose_2d,
    scan_to_arrays,
    stamp_to_sec,
    transforms_between,
)
from qwen_vla_ros.ros.diagnostics import publish_diagnostics
from qwen_vla_ros.ros.params import declare
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.nav_control import NavigationController, NavigationParams
from qwen_vla_ros.runtime.pacing import PACE_TOPIC, TIME_EPS, Pacer, StepSchedule
from qwen_vla_ros.runtime.policy_loop import Request, stamp_or


class NavigationNode(Node):
    """Topics, parameters and timers around ``runtime.nav_control.NavigationController``."""

    def __init__(self, policy=None, **kwargs) -> None:
        super().__init__("navigation_node", **kwargs)
        self.params = params = declare(self, NavigationParams)
        self.spec = load_embodiment(params.embodiment)
        self.nav = NavigationController(self.spec, params)
        self._given_policy = policy
        policy, self.policy_error = open_policy_or_none(policy, params, self.spec.name,
                                                        self.get_logger())
        if self.policy_error:  # as policy_node's failed configure: stay up, never drive
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
            self.create_subscription(Image, params.depth_topic, lambda m: self.nav.add_depth(
                stamp_or(stamp_to_sec(m.header.stamp), self.now())), qos.SENSOR)
        if params.scan_topic:
            self.create_subscription(LaserScan, params.scan_topic, self._scan_cb, qos.SENSOR)
        if params.pose_source == "odom":
            self.create_subscription(Odometry, "odom", self._odom_cb, qos.SENSOR)
        else:
            from tf2_msgs.msg import TFMessage

            self.create_subscription(TFMessage, "/tf", self._tf_cb, 100)
        self.create_subscription(String, "~/instruction", lambda m: self._set_instruction(m.data),
                                 qos.COMMAND)
        self.create_subscription(String, "mode", self._mode_cb, qos.LATCHED)
        self.create_subscription(Twist, "teleop_cmd_vel", self._teleop_cb, qos.COMMAND)
        self.pacer = None  # pace_sim: a runtime.pacing.Pacer for each POLICY run
        if params.pace_sim:  # the sim's clock drives plans and control; no timers
            self._configure_pacing()
        else:
            self.host.added_latency = params.added_latency_ms / 1e3
            self.create_timer(1.0 / params.inference_rate_hz, guarded(self._inference_tick,
                                                                      self._zero_velocity))
            self.create_timer(self.nav.control_dt, guarded(self._control_tick,
                                                           self._zero_velocity))
        self.create_timer(1.0, self._publish_diagnostics)
        self.out.set_status(f"ERROR: {self.policy_error}" if self.policy_error
                            else "IDLE: no instruction yet")
        if params.instruction.strip():
            self._set_instruction(params.instruction)

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

    def _zero_velocity(self, key: str, text: str) -> None:
        """A tick failed: say why and stop the base."""
        self._warn(key, f"{text}; zero velocity")
        self.out.send(self.nav.stop_velocity())

    @property
    def status(self) -> str:
        return self.out.status

    # ---- inputs -------------------------------------------------------------------------
    def _odom_cb(self, msg: Odometry) -> None:
        if msg.header.frame_id:
            self.out.frame = msg.header.frame_id
        self._add_pose(msg.header.stamp, msg.pose.pose.position, msg.pose.pose.orientation)

    def _scan_cb(self, msg: LaserScan) -> None:
        angles, ranges, range_min = scan_to_arrays(msg)
        reason = self.nav.add_scan(stamp_or(stamp_to_sec(msg.header.stamp), self.now()),
                                   angles, ranges, range_min)
        if reason:
            self._warn("scan", reason)

    def _tf_cb(self, msg) -> None:
        for tf in transforms_between(msg, self.out.frame, self.params.base_frame):
            self._add_pose(tf.header.stamp, tf.transform.translation, tf.transform.rotation)

    def _add_pose(self, stamp, position, q) -> None:
        reason = self.nav.add_pose(stamp_or(stamp_to_sec(stamp), self.now()),
                                   pose_2d(position, q))
        if reason:
            self._warn("odom", f"odometry rejected: {reason}")
        elif self.params.pace_sim:
            self._pace()  # the pose a paced step was waiting for

    def _set_instruction(self, text: str) -> None:
        reason = self.nav.set_instruction(text)
        if reason:
            self._warn("instr", reason)
            return
        self.get_logger().info(f"instruction: {text.strip()!r}")
        if not self.policy_error:  # without a policy the ERROR stays on show
            self.out.set_status("NAVIGATING")
        if self.params.pace_sim:
            self._pace()

    def _mode_cb(self, msg: String) -> None:
        try:
            if self.nav.set_mode(msg.data):
                self.get_logger().info(f"mode {self.nav.mode.value}")
        except ValueError as exc:
            self._warn("mode", str(exc))
        if self.params.pace_sim:
            self._pace()  # a held sim sends no clock: a run begins from here

    def _teleop_cb(self, msg: Twist) -> None:
        reason = self.nav.set_teleop(self.now(), float(msg.linear.x), float(msg.angular.z))
        if reason:
            self._warn("teleop", reason)

    # ---- inference ----------------------------------------------------------------------
    def _inference_tick(self) -> None:
        if not self.nav.wants_plan() or not self.host.worker.idle() or self.policy is None:
            return
        self._request(self.now())

    def _request(self, now: float) -> bool:
        """Ask the model for a plan from the observation at ``now``; False if there is none."""
        request = self.nav.request(now)
        if isinstance(request, str):
            self._warn("infer", request)
            return False
        self.host.worker.submit(request)
        return True

    def _on_chunk(self, request: Request, chunk) -> None:
        if self.params.pace_sim:  # applied when the sim's clock reaches its time
            with self._pace_lock:
                if self.pacer is None or self.nav.loop.before_restart(request):
                    return  # asked for in a run that is over
                self.pacer.finished(request, chunk)
            self._pace()
            return
        self._apply_chunk(request, chunk)

    def _apply_chunk(self, request: Request, chunk) -> None:
        out = self.nav.on_chunk(request, chunk)
        if out.error:
            self.get_logger().error(out.error)
            return
        self.host.publish(request, chunk)
        self.out.apply(out, self.nav.mode)

    # ---- control ------------------------------------------------------------------------
    def _control_tick(self) -> None:
        self.out.apply(self.nav.control(self.now()), self.nav.mode)

    # ---- pacing (pace_sim) --------------------------------------------------------------
    def _configure_pacing(self) -> None:
        import threading

        from rosgraph_msgs.msg import Clock
        from std_msgs.msg import Float64

        self._pace_lock = threading.RLock()
        self._sim_now: float | None = None  # the sim's last clock reading
        self._controlled_at = -math.inf  # the clock reading of the last step commanded
        self._control = StepSchedule(self.nav.control_dt)  # the follower's ticks (sim s)
        self._velocity = None  # what it sent last: sent again on the steps between
        self._granted: float | None = None
        self._grant_pub = self.create_publisher(Float64, PACE_TOPIC, qos.COMMAND)

        def on_clock(msg) -> None:
            self._sim_now = stamp_to_sec(msg.clock)
            self._pace()

        def on_failure() -> None:
            with self._pace_lock:
                if self.pacer is not None and self._sim_now is not None:
                    self.pacer.failed(self._sim_now)
            self._pace()

        def follower_failed(key: str, text: str) -> None:
            self._velocity = self.nav.stop_velocity()  # and on the steps between
            self._zero_velocity(key, text)

        self._follow = guarded(self._follow_step, follower_failed)
        self.host.on_failure = on_failure
        self.host.on_input = self._pace  # a step may be waiting for this frame
        self.create_subscription(Clock, "/clock", guarded(on_clock, self._zero_velocity),
                                 qos.COMMAND)

    def _pace(self) -> None:
        """At the sim's last clock reading, once that moment's inputs are in (POLICY): the
        plan the pacer says is due, a new request, the follower on its schedule (once per
        step: cmd_vel every step), then the grant. A run that STOPPED keeps the sim at the
        stop until the mode changes; out of POLICY the sim runs free."""
        from std_msgs.msg import Float64

        with self._pace_lock:
            now = self._sim_now
            if now is None:
                return
            policy = self.nav.mode is Mode.POLICY and self.policy is not None
            if policy and self.nav.awaiting(now):
                return  # that moment's frame or pose is on its way
            grant = math.inf
            if policy and self.nav.wants_plan():
                if self.pacer is None:  # a run begins
                    self.pacer = Pacer(self.params.added_latency_ms / 1e3,
                                       1.0 / self.params.inference_rate_hz)
                    self.nav.restart_run(now)
                    self._control.restart(now)
                due = self.pacer.tick(now)
                if due.publish is not None:
                    self._apply_chunk(*due.publish)
                if self.nav.wants_plan():
                    if due.request and not self._request(now):
                        self.pacer.failed(now)
                    grant = self.pacer.grant
                else:
                    grant = now  # stopped: the sim waits here for the mode to change
            elif policy and self.pacer is not None:
                grant = self._granted  # stopped earlier in this run: stay at the stop
            else:
                self.pacer = None
            if now > self._controlled_at + TIME_EPS:
                self._controlled_at = now
                self._control_step(now)
            if grant != self._granted:
                self._granted = grant
                self._grant_pub.publish(Float64(data=grant))

    def _control_step(self, now: float) -> None:
        """One sim step's cmd_vel: the follower's at its rate, the last one again between."""
        if self._control.due(now):
            self._follow(now)
        else:
            self.out.send(self._velocity)

    def _follow_step(self, now: float) -> None:
        out = self.nav.control(now)
        self._velocity = out.velocity
        self.out.apply(out, self.nav.mode)

    # ---- diagnostics --------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = self.now()
        stale = self.nav.stale(now)
        publish_diagnostics(
            self, self.diag_pub, "qwen_vla_ros: navigation", self.spec.name,
            "ERROR" if self.policy is None else "WARN" if stale else "OK",
            self.status + (f" ({stale})" if stale else ""),
            {**self.nav.diagnostic_values(now), **self.host.diagnostic_values()})

    def destroy_node(self) -> None:
        self.host.release(keep=self._given_policy)
        super().destroy_node()


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(NavigationNode, args)


if __name__ == "__main__":
    main()
