"""The part of interbotix_xs_sdk's behaviour a client can get wrong, for one robot namespace,
without ROS: operating modes, torque and registers as its services set them, and how a
gripper command is read in each mode (interbotix_ros_core ``xs_sdk_obj.cpp`` / ``xs_sdk_sim``).

- ``linear_position`` (what the ALOHA bringup starts follower grippers in): a
  JointSingleCommand is the distance between the fingers in metres, turned into the motor
  angle through the horn/arm geometry; a radian value there has no angle (NaN).
- ``position``, ``ext_position``, ``current_based_position``: the command is the motor angle.
- ``current``, ``pwm``, ``velocity``: effort or speed, not modelled here (rejected).
- torque off: the motor does not follow commands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qwen_vla_ros.embodiment.robot_profile import XS_MODES

ARM_GROUP = "arm"
# Gripper geometry of the ALOHA follower (interbotix_ros_manipulators
# config/aloha_vx300s.yaml, grippers.gripper: horn_radius, arm_length), metres.
HORN_RADIUS, ARM_LENGTH = 0.022, 0.036
ANGLE_MODES = ("position", "ext_position", "current_based_position")


def linear_to_angle(distance: float, horn_radius: float = HORN_RADIUS,
                    arm_length: float = ARM_LENGTH) -> float:
    """xs_sdk's convert_linear_position_to_radian: finger distance (m) -> motor angle (rad);
    NaN when no angle gives that distance (e.g. a value in radians)."""
    half = distance / 2.0
    if half == 0:
        return math.nan
    c = (horn_radius ** 2 + half ** 2 - arm_length ** 2) / (2 * horn_radius * half)
    return math.pi / 2.0 - math.acos(c) if -1.0 <= c <= 1.0 else math.nan


@dataclass
class XsMotors:
    """Modes, torque and registers of one xs_sdk robot: an ``arm`` group and single joints."""

    arm_joints: tuple[str, ...]
    singles: tuple[str, ...] = ("gripper",)
    gripper_mode: str = "linear_position"
    modes: dict[str, str] = field(default_factory=dict)
    torque: dict[str, bool] = field(default_factory=dict)
    registers: dict[tuple[str, str], int] = field(default_factory=dict)
    reboots: int = 0

    def __post_init__(self) -> None:
        for j in self.arm_joints:
            self.modes.setdefault(j, "position")
        for j in self.singles:
            self.modes.setdefault(j, self.gripper_mode)
        for j in self.joints:
            self.torque.setdefault(j, True)

    @property
    def joints(self) -> tuple[str, ...]:
        return (*self.arm_joints, *self.singles)

    def resolve(self, cmd_type: str, name: str) -> list[str] | str:
        """Joints a request names, or why it is invalid (xs_sdk robot_srv_validate)."""
        if cmd_type == "group":
            if name == ARM_GROUP:
                return list(self.arm_joints)
            if name == "all":
                return list(self.joints)
            return f"unknown group '{name}' (have '{ARM_GROUP}', 'all')"
        if cmd_type == "single":
            return [name] if name in self.joints else \
                f"unknown joint '{name}' (have {list(self.joints)})"
        return f"cmd_type must be 'group' or 'single', got '{cmd_type}'"

    # ---- services -----------------------------------------------------------------------
    def set_operating_modes(self, cmd_type: str, name: str, mode: str) -> str | None:
        joints = self.resolve(cmd_type, name)
        if isinstance(joints, str):
            return joints
        if mode not in XS_MODES:
            return f"unknown operating mode '{mode}'"
        for j in joints:
            self.modes[j] = mode
        return None

    def torque_enable(self, cmd_type: str, name: str, enable: bool) -> str | None:
        joints = self.resolve(cmd_type, name)
        if isinstance(joints, str):
            return joints
        for j in joints:
            self.torque[j] = bool(enable)
        return None

    def reboot_motors(self, cmd_type: str, name: str, enable: bool) -> str | None:
        joints = self.resolve(cmd_type, name)
        if isinstance(joints, str):
            return joints
        self.reboots += 1
        for j in joints:
            self.torque[j] = bool(enable)
        return None

    def set_register(self, cmd_type: str, name: str, reg: str, value: int) -> str | None:
        joints = self.resolve(cmd_type, name)
        if isinstance(joints, str):
            return joints
        for j in joints:
            self.registers[(j, reg)] = int(value)
        return None

    def get_register(self, cmd_type: str, name: str, reg: str) -> list[int] | str:
        joints = self.resolve(cmd_type, name)
        if isinstance(joints, str):
            return joints
        return [self.registers.get((j, reg), 0) for j in joints]

    def handle(self, service: str, fields: dict) -> str | list[int] | None:
        """One service request by its xs_sdk name and request fields (a ServiceCall's, or a
        ROS request's): None when done, a list for get_motor_registers, else the reason."""
        f = fields
        if service == "set_operating_modes":
            return self.set_operating_modes(f["cmd_type"], f["name"], f["mode"])
        if service == "torque_enable":
            return self.torque_enable(f["cmd_type"], f["name"], f["enable"])
        if service == "reboot_motors":
            return self.reboot_motors(f["cmd_type"], f["name"], f["enable"])
        if service == "set_motor_registers":
            return self.set_register(f["cmd_type"], f["name"], f["reg"], f["value"])
        if service == "get_motor_registers":
            return self.get_register(f["cmd_type"], f["name"], f["reg"])
        return f"unknown service '{service}'"

    # ---- commands -----------------------------------------------------------------------
    def arm_accepts(self) -> str | None:
        off = [j for j in self.arm_joints if not self.torque[j]]
        if off:
            return f"torque is off for {off}: arm command ignored"
        bad = [j for j in self.arm_joints if self.modes[j] not in ANGLE_MODES]
        if bad:
            return f"arm joints {bad} are in mode {self.modes[bad[0]]!r}, not a position mode"
        return None

    def gripper_angle(self, joint: str, cmd: float) -> float | str:
        """The motor angle a single command asks for, or why it is not followed."""
        if not self.torque.get(joint, False):
            return f"torque is off for '{joint}': command ignored"
        mode = self.modes[joint]
        if mode == "linear_position":
            angle = linear_to_angle(cmd)
            if math.isnan(angle):
                return (f"'{joint}' is in linear_position mode, where the command is metres "
                        f"between the fingers: {cmd:g} gives no motor angle (NaN). Set it to "
                        "current_based_position (set_operating_modes) to command radians")
            return angle
        if mode in ANGLE_MODES:
            return float(cmd)
        return f"'{joint}' is in {mode!r} mode (effort/speed), not simulated"
