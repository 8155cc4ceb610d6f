"""Gripper units, in one place (no rclpy, no torch).

The model works in a normalised opening (0 = closed, 1 = open), as ALOHA/ACT datasets do. On an
Interbotix follower the gripper is two quantities (upstream Interbotix/aloha ``constants.py``,
ROS 2 branches main and 2.0, FOLLOWER_GRIPPER_JOINT_* and FOLLOWER_GRIPPER_POSITION_*):

- **commanded**: the gripper motor angle (rad, xs_sdk joint ``gripper``), sent as a
  JointSingleCommand once the gripper is in ``current_based_position`` mode;
- **observed**: the finger slide (m, xs_sdk joint ``left_finger``), which ALOHA datasets
  normalise as the gripper state (``real_env.get_qpos``).

A leader (teleop) gripper is read as its motor angle (LEADER_GRIPPER_JOINT_*). Every
conversion below is linear between the closed and open values, as upstream's are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from qwen_vla_ros.embodiment.schema import check_keys
from qwen_vla_ros.errors import ConfigError


@dataclass(frozen=True)
class GripperMap:
    """Linear map between the normalised opening (0 closed, 1 open) and one robot quantity."""

    closed: float
    open: float

    def to_robot(self, normalised: np.ndarray | float) -> np.ndarray | float:
        return self.closed + np.asarray(normalised) * (self.open - self.closed)

    def to_normalised(self, robot: np.ndarray | float) -> np.ndarray | float:
        return (np.asarray(robot) - self.closed) / (self.open - self.closed)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> GripperMap:
        check_keys(data, ("closed", "open"), ("closed", "open"), where)
        g = cls(float(data["closed"]), float(data["open"]))
        if g.closed == g.open:
            raise ConfigError(f"{where}: closed and open are equal")
        return g

    def to_dict(self) -> dict[str, float]:
        return {"closed": self.closed, "open": self.open}


@dataclass(frozen=True)
class Gripper(GripperMap):
    """A follower gripper: commanded as the motor angle (``closed``/``open``, rad), observed
    as ``finger_joint`` through ``finger`` (m) when given, else as the motor angle."""

    finger: GripperMap | None = None
    finger_joint: str = "left_finger"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> Gripper:
        check_keys(data, ("closed", "open", "finger", "finger_joint"), ("closed", "open"),
                    where)
        joint = GripperMap.from_dict({k: data[k] for k in ("closed", "open")}, where)
        finger = (GripperMap.from_dict(data["finger"], f"{where}.finger")
                  if data.get("finger") is not None else None)
        return cls(joint.closed, joint.open, finger,
                   str(data.get("finger_joint", "left_finger")))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = super().to_dict()
        if self.finger is not None:
            out["finger"] = self.finger.to_dict()
            out["finger_joint"] = self.finger_joint
        return out

    def observed(self, joint: str) -> tuple[str, GripperMap]:
        """(joint name in the driver's JointState, its map) for the measured opening;
        ``joint`` is the motor's name, used when no finger map is given."""
        if self.finger is not None:
            return self.finger_joint, self.finger
        return joint, self


def leader_to_follower(leader: GripperMap, follower: GripperMap,
                       leader_value: np.ndarray | float) -> np.ndarray | float:
    """Teleop: a leader gripper reading -> the follower command that opens it as far
    (upstream LEADER2FOLLOWER_JOINT_FN)."""
    return follower.to_robot(leader.to_normalised(leader_value))
