"""The interbotix_xs_sdk view of the simulated ALOHA (ROS-free; the aloha_sim node wires it).

Commands arrive as the xs_sdk takes them (group ``arm``: 6 joint positions in rad; single
``gripper``: read per its operating mode, see sim/xs_sdk.py: the motor angle in rad once the
gripper is in current_based_position, metres between the fingers in linear_position, where
the bringup starts it) and become the sim's 14-value target; joint states leave with the
xs_sdk's names (waist .. wrist_rotate, gripper in rad, left_finger / right_finger in m). Every
gripper unit comes from the embodiment (embodiment/gripper.py), the same maps the adapters and
the policy use, so sim and hardware agree on units by construction.
"""

from __future__ import annotations

import numpy as np

from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.sim.aloha import ARM_JOINTS, AlohaSim
from qwen_vla_ros.sim.xs_sdk import XsMotors

JOINT_NAMES = (*ARM_JOINTS, "gripper", "left_finger", "right_finger")


class InterbotixSimBridge:
    def __init__(self, spec: EmbodimentSpec, sim: AlohaSim,
                 gripper_mode: str = "linear_position") -> None:
        if spec.action_dim != 14 or len(spec.robots) != 2:
            raise ValueError(f"embodiment '{spec.name}' is not a two-arm ALOHA layout")
        self.spec = spec
        self.sim = sim
        self.robots = spec.robots  # [follower_left, follower_right], sim arm order
        self.target = sim.qpos()
        self._lower, self._upper = spec.lower(), spec.upper()
        self.motors = {r: XsMotors(ARM_JOINTS, ("gripper",), gripper_mode) for r in self.robots}

    def reset(self, seed: int) -> None:
        self.target = self.sim.reset(seed)

    def _dims(self, robot: str) -> tuple[list[int], int]:
        if robot not in self.robots:
            raise KeyError(f"unknown robot '{robot}'; have {self.robots}")
        idx = self.spec.dims_of(robot)
        arm = [i for i in idx if self.spec.action[i].gripper is None]
        grip = next(i for i in idx if self.spec.action[i].gripper is not None)
        return arm, grip

    def on_group(self, robot: str, group: str, cmd) -> str | None:
        """A JointGroupCommand; returns a rejection reason or None."""
        if group != "arm":
            return f"unknown group '{group}' (this sim has 'arm')"
        values = np.asarray(cmd, dtype=np.float64)
        arm, _ = self._dims(robot)
        refused = self.motors[robot].arm_accepts()
        if refused:
            return refused
        if values.shape != (len(arm),):
            return f"group 'arm' takes {len(arm)} values, got {values.shape[0]}"
        if not np.all(np.isfinite(values)):
            return "non-finite joint command ignored"
        self.target[arm] = np.clip(values, self._lower[arm], self._upper[arm])
        return None

    def on_single(self, robot: str, joint: str, cmd: float) -> str | None:
        """A JointSingleCommand for the gripper, read as its operating mode says."""
        _, grip = self._dims(robot)
        if joint != "gripper":
            return f"single command for '{joint}' not supported (only 'gripper')"
        if not np.isfinite(cmd):
            return "non-finite gripper command ignored"
        angle = self.motors[robot].gripper_angle(joint, cmd)
        if isinstance(angle, str):
            return angle
        g = self.spec.action[grip].gripper
        self.target[grip] = float(np.clip(g.to_normalised(angle), 0.0, 1.0))
        return None

    def step(self):
        return self.sim.step(self.target)

    def joint_state(self, robot: str) -> tuple[tuple[str, ...], list[float]]:
        arm, grip = self._dims(robot)
        q = self.sim.qpos()
        g = self.spec.action[grip].gripper
        finger_map = g.finger if g.finger is not None else g
        finger = float(finger_map.to_robot(q[grip]))  # the hardware's finger slide (m)
        return JOINT_NAMES, [*q[arm].tolist(), float(g.to_robot(q[grip])), finger, -finger]
