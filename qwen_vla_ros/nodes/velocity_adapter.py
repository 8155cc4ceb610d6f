"""velocity_adapter: action chunks -> velocity commands.

``output: float64_array`` (default): std_msgs/Float64MultiArray on ``commands`` for a
ros2_control forward velocity controller (/<controller>/commands), one value per action dim in
spec order. Joint-position embodiments are differentiated after the executor's velocity limit;
joint-velocity embodiments are passed through (clamped to their bounds and acceleration).
``output: twist``: geometry_msgs/Twist on ``cmd_vel`` for bases whose dims are named vx, vy,
wz... Leaving POLICY, or entering HOLD, publishes an explicit zero once: velocity controllers
keep their last command. A joint-velocity base starts each POLICY engagement from standstill.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Twist
from std_msgs.msg import Float64MultiArray

from qwen_vla_ros.nodes.adapter_base import ChunkAdapterNode
from qwen_vla_ros.ros import qos
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.observation import Rejection
from qwen_vla_ros.runtime.velocity import (
    VelocityAdapterParams,
    position_to_velocity,
    twist_axes,
)


class VelocityAdapter(ChunkAdapterNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("velocity_adapter", VelocityAdapterParams, **kwargs)
        self.output = output = self.params.output  # type: ignore[attr-defined]
        self.is_velocity = self.spec.kind == "joint_velocity"
        if output == "twist":
            self.axes = twist_axes(self.spec)
            self.pub = self.create_publisher(Twist, "cmd_vel", qos.COMMAND)
        else:
            self.pub = self.create_publisher(Float64MultiArray, "commands", qos.COMMAND)
        if not self.is_velocity:
            self.subscribe_joint_states("joint_states", self.measured, self.measured.robots())
        self.needs_measured_pose = not self.is_velocity
        self._previous: np.ndarray | None = None

    def handover_pose(self, now: float) -> np.ndarray | Rejection:
        if self.is_velocity:
            return np.zeros(self.spec.action_dim)  # ramp up from standstill
        return super().handover_pose(now)

    def on_mode_change(self, previous: Mode, mode: Mode) -> None:
        self._previous = None if mode is Mode.HOLD else self.chunk_executor.last_command
        if previous is not Mode.HOLD and mode is not previous:
            self._publish(np.zeros(self.spec.action_dim))

    def hold_at(self, measured: np.ndarray) -> None:
        """Leaving a driving mode already sent zero velocity (on_mode_change)."""

    def send(self, position: np.ndarray) -> None:
        if self.is_velocity:
            velocity = position
        else:
            previous = self._previous if self._previous is not None else position
            velocity = position_to_velocity(position, previous, self.spec.dt)
            self._previous = position.copy()
        self._publish(velocity)

    def _publish(self, velocity: np.ndarray) -> None:
        if not np.all(np.isfinite(velocity)):
            self.get_logger().error("non-finite velocity not sent")
            return
        if self.output == "twist":
            msg = Twist()
            for i, part, axis in self.axes:
                setattr(getattr(msg, part), axis, float(velocity[i]))
        else:
            msg = Float64MultiArray(data=[float(v) for v in velocity])
        self.pub.publish(msg)


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(VelocityAdapter, args)


if __name__ == "__main__":
    main()
