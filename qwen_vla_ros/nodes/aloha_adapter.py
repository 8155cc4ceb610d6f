"""aloha_adapter: drive the ALOHA follower arms through interbotix_xs_sdk.

Per follower namespace (spec ``robot``; defaults follower_left, follower_right):
  pub /<robot>/commands/joint_group   interbotix_xs_msgs/JointGroupCommand, group "arm",
                                      6 joints in xs_sdk order
  pub /<robot>/commands/joint_single  interbotix_xs_msgs/JointSingleCommand, "gripper", rad
  sub /<robot>/joint_states           measured pose (sensor_msgs/JointState)
Per leader namespace (spec ``teleop``; defaults leader_left, leader_right):
  sub /<leader>/joint_states          in TELEOP the followers track the leaders, through the
                                      same position and velocity limits as the policy
Namespaces can be renamed with parameters ``robots.<follower>`` / ``leaders.<follower>``.
"""

from __future__ import annotations

import numpy as np

from qwen_vla_ros.nodes.adapter_base import ChunkAdapterNode
from qwen_vla_ros.ros import qos
from qwen_vla_ros.runtime.interbotix import split_command
from qwen_vla_ros.runtime.observation import JointStateMerger, Rejection


class AlohaAdapter(ChunkAdapterNode):
    def __init__(self, **kwargs) -> None:
        from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand

        super().__init__("aloha_adapter", "aloha", **kwargs)
        self._group_cls, self._single_cls = JointGroupCommand, JointSingleCommand
        self.leaders = JointStateMerger(self.spec, leaders=True) if self.spec.teleop else None
        self.group_pubs, self.single_pubs = {}, {}
        for follower in self.spec.robots:
            ns = self.declare_parameter(f"robots.{follower}", follower).value
            self.subscribe_joint_states(f"/{ns}/joint_states", self.measured, [follower])
            self.group_pubs[follower] = self.create_publisher(
                JointGroupCommand, f"/{ns}/commands/joint_group", qos.COMMAND)
            self.single_pubs[follower] = self.create_publisher(
                JointSingleCommand, f"/{ns}/commands/joint_single", qos.COMMAND)
            leader = self.spec.leader_of(follower)
            if leader is not None and self.leaders is not None:
                lns = self.declare_parameter(f"leaders.{follower}", leader.robot).value
                self.subscribe_joint_states(f"/{lns}/joint_states", self.leaders,
                                            [leader.robot])

    def teleop_target(self, now: float) -> np.ndarray | Rejection:
        if self.leaders is None:
            return Rejection(f"embodiment '{self.spec.name}' has no leader arms")
        return self.leaders.state(now, self.max_state_age)

    def send(self, position: np.ndarray) -> None:
        for arm in split_command(self.spec, position):
            self.group_pubs[arm.robot].publish(
                self._group_cls(name=arm.group, cmd=[float(x) for x in arm.arm]))
            if arm.gripper is not None:
                self.single_pubs[arm.robot].publish(
                    self._single_cls(name=arm.gripper_joint, cmd=float(arm.gripper)))


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(AlohaAdapter, args)


if __name__ == "__main__":
    main()
