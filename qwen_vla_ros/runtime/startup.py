"""Bring ALOHA arms up and put them to sleep, as upstream's scripts do, without ROS.

Start-up (upstream ``opening_ceremony``): xs_sdk set-up calls (reboot the grippers, arm group
'position', gripper 'current_based_position', gripper current limit, torque on), then a slow
joint-space move from the measured pose to START_ARM_POSE; only then may TELEOP or POLICY
drive. Sleep (upstream ``sleep_arms``): through the start pose to the sleep pose, then optional
torque off. The adapter node performs each ServiceCall and sends each waypoint; this module
decides which and when, and every waypoint passes the embodiment's limits.

Phases: WAITING (no measured pose yet) -> CONFIGURING -> MOVING -> READY; SLEEPING -> ASLEEP;
any failed call -> FAILED (the arms hold, driving modes are refused, ``~/start`` retries).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from qwen_vla_ros.embodiment.robot_profile import RobotProfile
from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.params import param, positive
from qwen_vla_ros.runtime.limits import Limits
from qwen_vla_ros.runtime.supervision import AdapterParams


@dataclass
class AlohaAdapterParams(AdapterParams):
    """aloha_adapter's parameters: every adapter's, and its start-up and sleep."""

    embodiment: str = param("aloha", "embodiment name")
    robot_profile: str = param("aloha_stationary", "config/robots/NAME.yaml: arm namespaces, "
                                                   "poses, xs_sdk set-up")
    startup: bool = param(True, "set the xs_sdk modes and move to START_ARM_POSE before "
                                "TELEOP/POLICY (false only for drivers already set up by hand)")
    sleep_torque_off: bool = param(False, "torque the followers off once at the sleep pose")
    sleep_on_shutdown: bool = param(False, "on SIGINT/SIGTERM move to the sleep pose before "
                                           "exiting (needs the drivers still running: start "
                                           "them apart from this launch)")
    shutdown_timeout_s: float = param(15.0, "s (wall) the sleep move on shutdown may take",
                                      check=positive)


class Phase(str, Enum):
    WAITING = "WAITING"
    CONFIGURING = "CONFIGURING"
    MOVING = "MOVING"
    READY = "READY"
    SLEEPING = "SLEEPING"
    ASLEEP = "ASLEEP"
    FAILED = "FAILED"


@dataclass(frozen=True)
class ServiceCall:
    """One xs_sdk service request: ``/<namespace>/<service>`` with these request fields."""

    namespace: str
    service: str  # set_operating_modes | torque_enable | reboot_motors | set_motor_registers
    fields: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.fields.items())
        return f"/{self.namespace}/{self.service}({args})"


def follower_setup_calls(profile: RobotProfile, spec: EmbodimentSpec) -> list[ServiceCall]:
    """The set-up calls for every follower, in upstream's order."""
    s = profile.setup
    if s is None:
        return []
    calls = []
    for robot in spec.robots:
        ns = profile.followers[robot]
        grip = [spec.action[i].joint or "gripper" for i in spec.dims_of(robot)
                if spec.action[i].gripper is not None]
        if s.reboot_grippers:
            calls += [ServiceCall(ns, "reboot_motors", {"cmd_type": "single", "name": g,
                                                        "enable": True, "smart_reboot": False})
                      for g in grip]
        calls.append(ServiceCall(ns, "set_operating_modes", {
            "cmd_type": "group", "name": "arm", "mode": s.arm_mode,
            "profile_type": "velocity", "profile_velocity": 0, "profile_acceleration": 0}))
        for g in grip:
            calls.append(ServiceCall(ns, "set_operating_modes", {
                "cmd_type": "single", "name": g, "mode": s.gripper_mode,
                "profile_type": "velocity", "profile_velocity": 0, "profile_acceleration": 0}))
            if s.gripper_current_limit is not None:
                calls.append(ServiceCall(ns, "set_motor_registers", {
                    "cmd_type": "single", "name": g, "reg": s.current_limit_register,
                    "value": int(s.gripper_current_limit)}))
        calls.append(ServiceCall(ns, "torque_enable", {"cmd_type": "group", "name": "arm",
                                                       "enable": True}))
        calls += [ServiceCall(ns, "torque_enable", {"cmd_type": "single", "name": g,
                                                    "enable": True}) for g in grip]
    return calls


def leader_torque_calls(profile: RobotProfile, spec: EmbodimentSpec) -> list[ServiceCall]:
    """Leaders torque-off so a person can move them (TELEOP)."""
    if profile.setup is None or not profile.setup.leaders_torque_off:
        return []
    calls = []
    for robot in spec.robots:
        ns = profile.leaders.get(robot)
        if ns:
            calls += [ServiceCall(ns, "torque_enable", {"cmd_type": "group", "name": "arm",
                                                        "enable": False}),
                      ServiceCall(ns, "torque_enable", {"cmd_type": "single",
                                                        "name": "gripper", "enable": False})]
    return calls


def follower_torque_off_calls(profile: RobotProfile, spec: EmbodimentSpec
                              ) -> list[ServiceCall]:
    return [ServiceCall(profile.followers[r], "torque_enable",
                        {"cmd_type": "group", "name": "all", "enable": False})
            for r in spec.robots]


def joint_move(start: np.ndarray, goal: np.ndarray, speed: float, dt: float) -> np.ndarray:
    """Waypoints [steps, dim] from ``start`` (excluded) to ``goal`` (included), straight in
    joint space (upstream ``move_arms``: np.linspace), each joint at most ``speed`` units/s."""
    start, goal = np.asarray(start, float), np.asarray(goal, float)
    distance = float(np.max(np.abs(goal - start))) if start.size else 0.0
    steps = max(1, math.ceil(distance / (speed * dt) - 1e-9))
    frac = np.arange(1, steps + 1)[:, None] / steps
    return start + frac * (goal - start)


class StartupSequence:
    """What the adapter does before and after the driving modes, one tick at a time."""

    def __init__(self, profile: RobotProfile, spec: EmbodimentSpec, limits: Limits,
                 dt: float) -> None:
        profile.check(spec)
        self.profile, self.spec, self.limits, self.dt = profile, spec, limits, dt
        self.phase = Phase.WAITING
        self.error = ""
        self._calls: deque[ServiceCall] = deque()
        self._waypoints: deque[np.ndarray] = deque()
        self._after_calls: Phase = Phase.MOVING
        self._goal: np.ndarray | None = None
        self._torque_off = False  # after the sleep move (set by sleep())
        # Poses the arms are sent to, inside the limits (a profile pose beyond the URDF
        # limits, like xs_sdk's ALOHA sleep pose, stops at the limit).
        self.start_pose = np.clip(profile.start_pose(spec), limits.lower, limits.upper)
        self.sleep_pose = np.clip(profile.sleep_pose(spec), limits.lower, limits.upper)
        self.sleep_clipped = [spec.action[i].name for i in np.flatnonzero(
            np.abs(self.sleep_pose - profile.sleep_pose(spec)) > 1e-9)]

    # ---- transitions --------------------------------------------------------------------
    def start(self) -> None:
        """Begin (again): set-up calls, then the move to the start pose."""
        self.error = ""
        self._waypoints.clear()
        self._calls = deque(follower_setup_calls(self.profile, self.spec)
                            + leader_torque_calls(self.profile, self.spec))
        self._after_calls = Phase.MOVING
        self._goal = self.start_pose
        self.phase = Phase.CONFIGURING

    def sleep(self, torque_off: bool) -> None:
        """Through the start pose to the sleep pose; then torque off if asked."""
        self.error = ""
        self._calls.clear()
        self._waypoints.clear()
        self._goal = None
        self._torque_off = torque_off
        self.phase = Phase.SLEEPING

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def blocker(self) -> str | None:
        """Why a driving mode cannot be entered now, or None."""
        if self.phase is Phase.READY:
            return None
        if self.phase is Phase.FAILED:
            return f"start-up failed: {self.error} (call ~/start to retry)"
        if self.phase is Phase.ASLEEP:
            return "the arms are asleep (call ~/start)"
        return f"start-up not finished ({self.phase.value})"

    # ---- service calls ------------------------------------------------------------------
    def next_call(self) -> ServiceCall | None:
        return self._calls[0] if self.phase in (Phase.CONFIGURING, Phase.ASLEEP) and \
            self._calls else None

    def call_done(self, ok: bool, reason: str = "") -> None:
        call = self._calls.popleft()
        if not ok:
            self.error = f"{call.describe()}: {reason}"
            self.phase = Phase.FAILED
            self._calls.clear()

    # ---- motion -------------------------------------------------------------------------
    def step(self, measured: np.ndarray | None, last_command: np.ndarray | None
             ) -> np.ndarray | None:
        """The command for this tick (None: send nothing). ``measured``: the fresh measured
        pose or None; ``last_command``: what was sent last (the move continues from it)."""
        if self.phase is Phase.WAITING:
            return None
        if self.phase is Phase.CONFIGURING:
            if not self._calls:
                if measured is None:
                    return None  # wait for a fresh pose to plan the move from
                self._plan([self.start_pose], measured)
                self.phase = Phase.MOVING
            else:
                return None
        if self.phase is Phase.SLEEPING and not self._waypoints and self._goal is None:
            origin = last_command if last_command is not None else measured
            if origin is None:
                return None
            self._plan([self.start_pose, self.sleep_pose], origin)
            self._goal = self.sleep_pose
        if self._waypoints:
            target = self._waypoints.popleft()
            cmd, _ = self.limits.clamp(target, last_command, self.dt)
            if not self._waypoints and not np.allclose(cmd, target, atol=1e-6):
                self._waypoints.append(target)  # the velocity clamp lagged: keep going
            return cmd
        if self.phase is Phase.MOVING:
            self.phase = Phase.READY
        elif self.phase is Phase.SLEEPING:
            self.phase = Phase.ASLEEP
            if self._torque_off:
                self._calls = deque(follower_torque_off_calls(self.profile, self.spec))
        return None

    def _plan(self, goals: list[np.ndarray], origin: np.ndarray) -> None:
        self._waypoints.clear()
        here = np.asarray(origin, float)
        for goal in goals:
            for wp in joint_move(here, goal, self.profile.move_speed, self.dt):
                self._waypoints.append(wp)
            here = goal
