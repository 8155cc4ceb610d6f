"""Shared wiring of the adapter nodes: chunks in, mode in, one command per control tick out.

A subclass says how measured joint states arrive (``subscribe_joint_states``) and how a
command leaves (``send``); the ChunkExecutor (runtime/) decides what the command is.

Every entry into a driving mode (POLICY, TELEOP) starts from the MEASURED pose, so the first
commands ramp within the velocity limit; entering one without a fresh measured pose is refused
(mode falls back to HOLD). HOLD and TELEOP-without-fresh-leader publish nothing: the drivers
keep their last goal.

Topics: sub ~/action_chunk (JointTrajectory), mode (std_msgs/String, latched; remap to
/mode_manager/mode); pub ~/predicted_joint_states (JointState: the chunk's plan
``ghost_lookahead_s`` ahead) and ~/joint_states (the measured pose), both 10 Hz with the
embodiment's dim names (= urdf/aloha.urdf.xacro joint names), grippers in robot units.
"""

from __future__ import annotations

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.conversions import stamp_to_sec, trajectory_to_chunk
from qwen_vla_ros.runtime.executor import Chunk, ChunkExecutor, RejectedChunk
from qwen_vla_ros.runtime.limits import Limits
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.observation import JointStateMerger, Rejection


class ChunkAdapterNode(Node):
    def __init__(self, name: str, default_embodiment: str, **kwargs) -> None:
        super().__init__(name, **kwargs)
        d = ParameterDescriptor
        p = self.declare_parameter
        p("embodiment", default_embodiment, d(description="embodiment name"))
        p("blend", "ensemble", d(description="ensemble (ACT temporal ensembling) or rtc"))
        p("max_state_age", 0.2, d(description="s; older measured/leader pose -> no command"))
        p("ghost_lookahead_s", 0.5, d(description="s ahead of now shown on "
                                                   "~/predicted_joint_states"))
        self.spec = load_embodiment(self.get_parameter("embodiment").value)
        self.limits = Limits.from_spec(self.spec)
        self.measured = JointStateMerger(self.spec)
        self.chunk_executor = ChunkExecutor(self.limits, self.spec.dt,
                                            mode=self.get_parameter("blend").value)
        self.max_state_age = float(self.get_parameter("max_state_age").value)
        self.lookahead = float(self.get_parameter("ghost_lookahead_s").value)
        self.mode = Mode.HOLD
        self.pending_mode: Mode | None = None
        self.create_subscription(JointTrajectory, "~/action_chunk", self._chunk_cb, qos.COMMAND)
        self.create_subscription(String, "mode", self._mode_cb, qos.LATCHED)
        self.ghost_pub = self.create_publisher(JointState, "~/predicted_joint_states",
                                               qos.COMMAND)
        self.measured_pub = self.create_publisher(JointState, "~/joint_states", qos.COMMAND)
        self._ticks = 0
        self.create_timer(self.spec.dt, self._tick)

    # ---- helpers for subclasses ---------------------------------------------------------
    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def subscribe_joint_states(self, topic: str, merger: JointStateMerger,
                               robots: list[str]) -> None:
        """Feed a JointState topic into ``merger`` for the given namespaces."""
        def cb(msg: JointState) -> None:
            stamp = stamp_to_sec(msg.header.stamp) or self.now()
            for robot in robots:
                reason = merger.update(robot, list(msg.name), list(msg.position), stamp)
                if reason:
                    self.get_logger().warning(f"joint state rejected: {reason}",
                                              throttle_duration_sec=2.0)
        self.create_subscription(JointState, topic, cb, qos.SENSOR)

    def send(self, position: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def teleop_target(self, now: float) -> np.ndarray | Rejection:
        return Rejection(f"{self.get_name()} has no teleop input")

    def handover_pose(self, now: float) -> np.ndarray | Rejection:
        """Where a driving mode starts from: the measured pose, fresh."""
        return self.measured.state(now, self.max_state_age)

    def on_mode_change(self, previous: Mode, mode: Mode) -> None:
        """Hook for outputs that must say 'stop' explicitly (velocity controllers)."""

    def engage_blocker(self) -> str | None:
        """Why a driving mode cannot be entered yet (the request then waits), or None."""
        return None

    def hold_tick(self, now: float) -> None:
        """Hook run on every control tick in HOLD (start-up and sleep moves)."""

    # ---- callbacks ----------------------------------------------------------------------
    def _chunk_cb(self, msg: JointTrajectory) -> None:
        try:
            actions, stamp, dt = trajectory_to_chunk(msg, self.spec.action_names)
            self.chunk_executor.add_chunk(Chunk(actions, stamp, dt))
        except (ValueError, RejectedChunk) as exc:
            self.get_logger().error(f"chunk rejected: {exc}")

    def _mode_cb(self, msg: String) -> None:
        try:
            mode = Mode.parse(msg.data)
        except ValueError as exc:
            self.get_logger().error(str(exc))
            return
        self.request_mode(mode)

    def request_mode(self, mode: Mode) -> None:
        """Enter ``mode``; a driving mode the adapter is not ready for waits (``pending_mode``)
        until it is, and is engaged then."""
        self.pending_mode = None
        if mode is not Mode.HOLD:
            blocker = self.engage_blocker()
            if blocker is not None:
                self.pending_mode = mode
                self.get_logger().warning(f"{mode.value} requested; waiting: {blocker}")
                if self.mode is not Mode.HOLD:
                    previous, self.mode = self.mode, Mode.HOLD
                    self.on_mode_change(previous, Mode.HOLD)
                return
        if mode == self.mode:
            return
        previous = self.mode
        if mode is not Mode.HOLD:
            measured = self.handover_pose(self.now())
            if isinstance(measured, Rejection):
                self.get_logger().error(f"not engaging {mode.value}: {measured}; holding")
                self.mode = Mode.HOLD
                self.on_mode_change(previous, Mode.HOLD)
                return
            # Start from where the robot is: the velocity limit then ramps the handover.
            if mode is Mode.POLICY:
                self.chunk_executor.reset(measured)
            else:
                self.chunk_executor.set_last_command(measured)
        self.mode = mode
        self.on_mode_change(previous, mode)
        self.get_logger().info(f"mode {mode.value}")

    def _tick(self) -> None:
        try:
            self._control_tick()
        except Exception as exc:
            self.get_logger().error(f"control tick failed, holding: {type(exc).__name__}: "
                                    f"{exc}", throttle_duration_sec=1.0)

    def _control_tick(self) -> None:
        now = self.now()
        self._ticks += 1
        if self.mode is Mode.HOLD:
            self.hold_tick(now)
            if self.pending_mode is not None and self.engage_blocker() is None:
                self.request_mode(self.pending_mode)
        if self.mode is Mode.POLICY:
            cmd = self.chunk_executor.step(now)
            if cmd is not None:
                self.send(cmd.position)
        elif self.mode is Mode.TELEOP:
            target = self.teleop_target(now)
            if isinstance(target, Rejection):
                self.get_logger().warning(f"teleop: holding: {target}",
                                          throttle_duration_sec=2.0)
            elif self.chunk_executor.last_command is not None:
                position, _ = self.limits.clamp(target, self.chunk_executor.last_command,
                                                self.spec.dt)
                self.chunk_executor.set_last_command(position)
                self.send(position)
        if self._ticks % max(1, round(0.1 / self.spec.dt)) == 0:
            planned, _ = self.chunk_executor.planned(now + self.lookahead)
            if planned is not None:  # shown as it would be commanded: inside the limits
                self._publish_view(self.ghost_pub,
                                   np.clip(planned, self.limits.lower, self.limits.upper))
            if self.spec.state_dim == self.spec.action_dim:  # every dim is measured
                measured = self.measured.state(now, self.max_state_age)
                if not isinstance(measured, Rejection):
                    self._publish_view(self.measured_pub, measured)

    def _publish_view(self, pub, values: np.ndarray) -> None:
        """Embodiment dim names (= URDF joint names), grippers in robot units (rad)."""
        positions = self.spec.to_robot_units(values)
        msg = JointState(name=self.spec.action_names, position=positions.tolist())
        msg.header.stamp = self.get_clock().now().to_msg()
        pub.publish(msg)
