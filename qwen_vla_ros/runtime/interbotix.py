"""Split an embodiment command into interbotix_xs_sdk commands, per robot namespace.

Per follower arm: one group command for the arm joints (group ``arm``, joints in the spec's
order, which is the xs_sdk group order: waist, shoulder, elbow, forearm_roll, wrist_angle,
wrist_rotate) and one single command for ``gripper`` in the gripper joint's units (rad).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qwen_vla_ros.embodiment.spec import EmbodimentSpec


@dataclass(frozen=True)
class ArmCommand:
    robot: str
    group: str
    arm: tuple[float, ...]
    gripper_joint: str | None
    gripper: float | None


def split_command(spec: EmbodimentSpec, command: np.ndarray, group: str = "arm"
                  ) -> list[ArmCommand]:
    if command.shape != (spec.action_dim,):
        raise ValueError(f"command has shape {command.shape}, expected ({spec.action_dim},)")
    if not np.all(np.isfinite(command)):
        raise ValueError("command contains NaN or inf")
    out = []
    for robot in spec.robots:
        idx = spec.dims_of(robot)
        arm = tuple(float(command[i]) for i in idx if spec.action[i].gripper is None)
        grip = [i for i in idx if spec.action[i].gripper is not None]
        gripper_joint, gripper = None, None
        if grip:
            d = spec.action[grip[0]]
            gripper_joint = d.joint or "gripper"
            gripper = float(d.gripper.to_robot(command[grip[0]]))
        out.append(ArmCommand(robot, group, arm, gripper_joint, gripper))
    return out
