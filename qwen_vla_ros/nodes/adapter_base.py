"""Shared wiring of the adapter nodes: chunks in, mode in, one command per control tick out.

A subclass says how measured joint states arrive (``subscribe_joint_states``) and how a
command leaves (``send``); the ChunkExecutor (runtime/) decides what the command is.

Every entry into a driving mode (POLICY, TELEOP) starts from the MEASURED pose, so the first
commands ramp within the velocity limit; a driving mode asked for without a fresh measured pose
waits up to ``engage_timeout`` for one, then is refused. HOLD publishes nothing: the drivers
keep their last goal.

Faults (runtime/supervision.py): no valid chunk in POLICY, no leader pose in TELEOP, no measured
pose, the mode source gone or the clock jumping back -> HOLD at the measured pose (one command
there; velocity outputs send zero), an error logged, ERROR on /diagnostics and the fault on
~/effective_mode. The adapter stays in HOLD until a driving mode is asked for again.

Topics: sub ~/action_chunk (JointTrajectory), mode (std_msgs/String, latched; remap to
/mode_manager/mode); pub ~/effective_mode (std_msgs/String, latched: AdapterStatus JSON, the
mode really driven, the one asked for, why it waits or refused), /diagnostics (1 Hz),
~/predicted_joint_states (JointState: the chunk's plan
``ghost_lookahead_s`` ahead) and ~/joint_states (the measured pose), both 10 Hz with the
embodiment's dim names (= urdf/aloha.urdf.xacro joint names), grippers in robot units.
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.conversions import stamp_to_sec, trajectory_to_chunk
from qwen_vla_ros.ros.diagnostics import publish_diagnostics
from qwen_vla_ros.ros.params import declare
from qwen_vla_ros.runtime.executor import (
    Chunk,
    ChunkExecutor,
    ChunkTag,
    PrefixMismatch,
    RejectedChunk,
    StaleChunk,
)
from qwen_vla_ros.runtime.limits import Limits
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.observation import JointStateMerger, Rejection
from qwen_vla_ros.runtime.supervision import AdapterParams, AdapterStatus, Supervisor


class ChunkAdapterNode(Node):
    def __init__(self, name: str, params: type[AdapterParams] = AdapterParams,
                 **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.params = declare(self, params)
        self.spec = load_embodiment(self.params.embodiment)
        self.limits = Limits.from_spec(self.spec)
        self.measured = JointStateMerger(self.spec)
        self.chunk_executor = ChunkExecutor(self.limits, self.spec.dt, mode=self.params.blend,
                                            ensemble_decay=self.params.ensemble_decay)
        # chunks accepted / stale on arrival / prefix not this schedule's / otherwise invalid
        self.chunk_counts = {"accepted": 0, "stale": 0, "diverged": 0, "rejected": 0}
        self.max_state_age = self.params.max_state_age
        self.lookahead = self.params.ghost_lookahead_s
        self.supervisor = Supervisor(self.params.supervisor_config(),
                                     chunk_span=self.spec.horizon * self.spec.dt)
        self.needs_measured_pose = True  # False where nothing is measured (velocity bodies)
        self.mode = Mode.HOLD
        self.requested = Mode.HOLD
        self.pending_mode: Mode | None = None
        self._pending_deadline = float("inf")
        self.waiting, self.fault = "", ""
        self._mode_source_seen = False
        self.status_pub = self.create_publisher(String, "~/effective_mode", qos.LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_subscription(JointTrajectory, "~/action_chunk", self._chunk_cb, qos.COMMAND)
        self.create_subscription(String, "mode", self._mode_cb, qos.LATCHED)
        self.ghost_pub = self.create_publisher(JointState, "~/predicted_joint_states",
                                               qos.COMMAND)
        self.measured_pub = self.create_publisher(JointState, "~/joint_states", qos.COMMAND)
        self._ticks = 0
        self._status_key: tuple | None = None  # the first control tick publishes the status
        # A backward jump (a bag or sim restarting its clock) is caught when it happens, even
        # if the clock moves on before the next control tick.
        from rclpy.clock import JumpThreshold
        from rclpy.duration import Duration

        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1_000_000),
                          on_clock_change=False), post_callback=self._clock_jumped)
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

    def refusal(self) -> str | None:
        """Why a driving mode asked for now would be refused (not waited for), or None."""
        return None

    def hold_tick(self, now: float) -> None:
        """Hook run on every control tick in HOLD (start-up and sleep moves)."""

    def hold_at(self, measured: np.ndarray) -> None:
        """Stop where the robot is after a fault (position outputs: one command there)."""
        self.send(np.clip(measured, self.limits.lower, self.limits.upper))

    # ---- callbacks ----------------------------------------------------------------------
    def _chunk_cb(self, msg: JointTrajectory) -> None:
        now = self.now()
        try:
            tag = ChunkTag.parse(msg.header.frame_id)
            actions, stamp, dt = trajectory_to_chunk(msg, self.spec.action_names)
            self.chunk_executor.add_chunk(
                Chunk(actions, stamp, dt, tag.prefix if tag else 0, tag.id if tag else None,
                      tag.sent if tag else None),
                now=now)
            self.supervisor.on_chunk(now)
            self.chunk_counts["accepted"] += 1
        except StaleChunk as exc:
            self.chunk_counts["stale"] += 1
            self.get_logger().warning(f"chunk dropped: {exc}", throttle_duration_sec=1.0)
        except PrefixMismatch as exc:
            self.chunk_counts["diverged"] += 1
            self.get_logger().error(f"chunk rejected: {exc}", throttle_duration_sec=1.0)
        except (ValueError, RejectedChunk) as exc:
            self.chunk_counts["rejected"] += 1
            self.get_logger().error(f"chunk rejected: {exc}")

    def _mode_cb(self, msg: String) -> None:
        self._mode_source_seen = True
        try:
            mode = Mode.parse(msg.data)
        except ValueError as exc:
            self.get_logger().error(str(exc))
            return
        self.request_mode(mode)

    def request_mode(self, mode: Mode) -> None:
        """Enter ``mode``. A driving mode waits while ``engage_blocker`` says so, then up to
        ``engage_timeout`` for a fresh measured pose; it is engaged from that pose, or refused
        (``refuse``). HOLD is immediate and keeps the last fault on show."""
        self.requested, self.pending_mode, self.waiting = mode, None, ""
        if mode is Mode.HOLD:
            self._set_mode(Mode.HOLD)
            self._publish_status()
            return
        self.fault = ""
        if mode is self.mode:
            self._publish_status()
            return
        self.pending_mode = mode
        self._pending_deadline = float("inf")
        if self.mode is not Mode.HOLD:  # TELEOP <-> POLICY: engaged anew from the measured pose
            self._set_mode(Mode.HOLD)
        self._try_engage(self.now())

    def refuse(self, reason: str) -> None:
        """The asked-for driving mode cannot be honoured: HOLD, and say why."""
        self.get_logger().error(reason)
        self.pending_mode, self.waiting, self.fault = None, "", reason
        self._set_mode(Mode.HOLD)
        self._publish_status()

    def _try_engage(self, now: float) -> None:
        mode = self.pending_mode
        if mode is None:
            return
        blocker = self.engage_blocker()
        if blocker is None:
            measured = self.handover_pose(now)
            if not isinstance(measured, Rejection):
                # Start from where the robot is: the velocity limit then ramps the handover.
                if mode is Mode.POLICY:
                    self.chunk_executor.reset(measured)
                else:
                    self.chunk_executor.set_last_command(measured)
                self.pending_mode, self.waiting = None, ""
                self.supervisor.on_engaged(now)
                self._set_mode(mode)
                self.get_logger().info(f"mode {mode.value}")
                self._publish_status()
                return
            if self._pending_deadline == float("inf"):
                self._pending_deadline = now + self.supervisor.cfg.engage_timeout
            elif now > self._pending_deadline:
                self.refuse(f"{mode.value} refused: no valid measured pose within "
                            f"{self.supervisor.cfg.engage_timeout:g} s ({measured}); holding")
                return
            blocker = f"no valid measured pose yet ({measured})"
        if blocker != self.waiting:
            self.waiting = blocker
            self.get_logger().warning(f"{mode.value} requested; waiting: {blocker}")
            self._publish_status()

    def _set_mode(self, mode: Mode) -> None:
        previous, self.mode = self.mode, mode
        if previous is not mode:
            self.on_mode_change(previous, mode)

    def _on_fault(self, now: float, reason: str) -> None:
        """Inputs of the engaged mode stopped: HOLD where the robot is, and say so."""
        driving = self.mode
        self.fault = f"{driving.value} -> HOLD: {reason}"
        self.get_logger().error(self.fault)
        self._set_mode(Mode.HOLD)
        measured = self.measured.state(now, self.max_state_age)
        if self.needs_measured_pose and not isinstance(measured, Rejection):
            self.hold_at(measured)
        self._publish_status()
        self._publish_diagnostics()

    def _publish_status(self, force: bool = True) -> None:
        """Publish ~/effective_mode (unless ``force`` is False and nothing changed)."""
        key = (self.mode, self.requested, self.waiting, self.fault, self.refusal() or "")
        if not force and key == self._status_key:
            return
        self._status_key = key
        self.status_pub.publish(String(data=AdapterStatus(
            *key[:4], stamp=self.now(), refuses=key[4]).to_json()))

    def _publish_diagnostics(self) -> None:
        publish_diagnostics(
            self, self.diag_pub, f"qwen_vla_ros: {self.get_name()}", self.spec.name,
            "ERROR" if self.fault else "WARN" if self.waiting else "OK",
            AdapterStatus(self.mode, self.requested, self.waiting, self.fault).text(), {
                "mode": self.mode.value, "requested": self.requested.value,
                "policy_timeout_s": f"{self.supervisor.policy_timeout():.2f}",
                "blend": self.chunk_executor.mode,
                **{f"chunks_{k}": v for k, v in self.chunk_counts.items()}})

    def _tick(self) -> None:
        try:
            self._control_tick()
        except Exception as exc:
            self.get_logger().error(f"control tick failed, holding: {type(exc).__name__}: "
                                    f"{exc}", throttle_duration_sec=1.0)

    def _clock_jumped(self, jump) -> None:
        now = self.now()
        reason = self.supervisor.clock_jump(now) or \
            f"clock jumped back by {-jump.delta.nanoseconds * 1e-9:.3f} s"
        self.chunk_executor.reset(None)
        if self.mode is not Mode.HOLD:
            self._on_fault(now, reason)
        else:
            self.get_logger().warning(reason)

    def _supervise(self, now: float) -> None:
        """Feed the watchdogs from this tick's inputs; a fault ends the driving mode."""
        jumped = self.supervisor.clock_jump(now)
        if jumped:
            self.chunk_executor.reset(None)
            if self.mode is not Mode.HOLD:
                self._on_fault(now, jumped)
            else:
                self.get_logger().warning(jumped)
            return
        if self.mode is Mode.HOLD:
            return
        if not self.needs_measured_pose or not isinstance(
                self.measured.state(now, self.max_state_age), Rejection):
            self.supervisor.state.feed(now)
        if self.mode is Mode.TELEOP and not isinstance(self.teleop_target(now), Rejection):
            self.supervisor.leader.feed(now)
        reason = self.supervisor.check(self.mode, now)
        if reason is None and self._mode_source_seen and self._ticks % 10 == 0 \
                and self.count_publishers(self._mode_topic) == 0:
            reason = f"mode source lost: nothing publishes {self._mode_topic}"
        if reason:
            self._on_fault(now, reason)

    @property
    def _mode_topic(self) -> str:
        return self.resolve_topic_name("mode")

    def _control_tick(self) -> None:
        now = self.now()
        self._ticks += 1
        self._supervise(now)
        if self.mode is Mode.HOLD:
            self.hold_tick(now)
            if self.pending_mode is not None:
                self._try_engage(now)
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
        self._publish_status(force=False)
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
