"""trajectory_adapter: action chunks -> a ros2_control joint_trajectory_controller.

In POLICY mode it publishes one-point JointTrajectory goals (time_from_start = one control
period) on ``joint_trajectory`` with what the ChunkExecutor returns: latency-skipped, blended,
clamped to position and velocity limits, or holding. Joint names are the spec's ``joint``
names (dim names where those repeat); grippers are converted to robot units.
Measured pose: ``joint_states``. See adapter_base for modes and the handover.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from qwen_vla_ros.nodes.adapter_base import ChunkAdapterNode
from qwen_vla_ros.ros import qos


class TrajectoryAdapter(ChunkAdapterNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("trajectory_adapter", **kwargs)
        names = [dim.joint or dim.name for dim in self.spec.action]
        self.hw_names = names if len(set(names)) == len(names) else self.spec.action_names
        self.subscribe_joint_states("joint_states", self.measured, self.measured.robots())
        self.pub = self.create_publisher(JointTrajectory, "joint_trajectory", qos.COMMAND)
        self._period = Duration(sec=0, nanosec=int(self.spec.dt * 1e9))

    def send(self, position: np.ndarray) -> None:
        out = position.copy()
        for i, dim in enumerate(self.spec.action):
            if dim.gripper is not None:
                out[i] = float(dim.gripper.to_robot(out[i]))
        msg = JointTrajectory(joint_names=self.hw_names)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.points = [JointTrajectoryPoint(positions=out.tolist(),
                                           time_from_start=self._period)]
        self.pub.publish(msg)


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(TrajectoryAdapter, args)


if __name__ == "__main__":
    main()
