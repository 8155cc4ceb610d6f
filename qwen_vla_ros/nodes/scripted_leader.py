"""scripted_leader: stands in for the human at the ALOHA leader arms, in simulation.

On each episode announced by aloha_sim (``/aloha_sim/episode``) it takes the scripted
transfer-cube demonstration for that seed (sim/scripted.py) and publishes it as leader joint
states (``/<leader>/joint_states``, xs_sdk names, gripper in the leader's rad) on sim time.
Run with use_sim_time:=true. In TELEOP, aloha_adapter makes the followers track it.

With ``start_with_teleop`` (default) the demonstration starts when the mode (``mode``, remap to
/mode_manager/mode) is TELEOP, not at the episode's start: the followers engage some time after
a reset (about 0.9 s of sim time in ``collect``), and a leader already under way then made them
race at the velocity limit to catch up, so recorded episodes began mid-motion and no training
sample showed the start pose a policy starts from.

Computing a demonstration takes a few hundred milliseconds of MuJoCo; done when the episode is
announced, the leader would fall silent (and, on a loaded machine, behind the sim's clock) just
as the episode starts. So the next seed's (aloha_sim's resets go seed + 1) is computed on a
worker thread while this one plays, and is ready when it is announced.
"""

from __future__ import annotations

import json
import threading

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.params import declare
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.sim.aloha import ARM_JOINTS
from qwen_vla_ros.sim.scripted import ScriptedLeaderParams, scripted_transfer_cube


class ScriptedLeader(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("scripted_leader", **kwargs)
        params = declare(self, ScriptedLeaderParams)
        name = params.embodiment
        self.start_with_teleop = params.start_with_teleop
        self.spec = load_embodiment(name)
        self.leaders = [self.spec.leader_of(r) for r in self.spec.robots]
        if any(leader is None for leader in self.leaders):
            raise ValueError(f"embodiment '{name}' lacks a teleop leader for every arm")
        self.pubs = [self.create_publisher(JointState, f"/{lead.robot}/joint_states",
                                           qos.SENSOR) for lead in self.leaders]
        self.create_subscription(String, "/aloha_sim/episode", self._episode, qos.LATCHED)
        self.create_subscription(String, "mode", self._mode_cb, qos.LATCHED)
        self.traj: np.ndarray | None = None
        self.t_start: float | None = None  # sim time of the demonstration's step 0
        self.mode: Mode | None = None
        self._ahead: tuple[int, threading.Thread, dict[int, np.ndarray]] | None = None
        self.create_timer(self.spec.dt, self._tick)

    def _episode(self, msg: String) -> None:
        ep = json.loads(msg.data)
        if ep.get("task") != "transfer_cube":
            self.get_logger().warning(f"no script for task {ep.get('task')!r}; idle")
            self.traj = None
            return
        seed = int(ep["seed"])
        self.traj = self._demonstration(seed)
        waits = self.start_with_teleop and self.mode is not Mode.TELEOP
        self.t_start = None if waits else float(ep["start"])
        self.get_logger().info(f"scripted demonstration for seed {seed}")
        self._prepare(seed + 1)

    def _mode_cb(self, msg: String) -> None:
        try:
            self.mode = Mode.parse(msg.data)
        except ValueError:
            return  # mode_manager's own concern; the leader keeps doing what it did
        if self.mode is Mode.TELEOP and self.traj is not None and self.t_start is None:
            self.t_start = self.get_clock().now().nanoseconds * 1e-9
            self.get_logger().info("TELEOP: demonstration started")

    def _demonstration(self, seed: int) -> np.ndarray:
        """The one computed ahead when it is this seed's, else computed now."""
        if self._ahead is not None and self._ahead[0] == seed:
            _, worker, done = self._ahead
            worker.join()
            if seed in done:
                return done[seed]
        return scripted_transfer_cube(seed)

    def _prepare(self, seed: int) -> None:
        done: dict[int, np.ndarray] = {}
        worker = threading.Thread(target=lambda: done.update({seed: scripted_transfer_cube(
            seed)}), name=f"scripted_leader seed {seed}", daemon=True)
        self._ahead = (seed, worker, done)
        worker.start()

    def destroy_node(self) -> None:
        if self._ahead is not None:
            self._ahead[1].join()  # no MuJoCo mid-step at interpreter exit
        super().destroy_node()

    def _tick(self) -> None:
        if self.traj is None:
            return
        now = self.get_clock().now()
        k = 0 if self.t_start is None else int(np.clip(
            round((now.nanoseconds * 1e-9 - self.t_start) / self.spec.dt), 0, len(self.traj) - 1))
        q = self.traj[k]
        for robot, leader, pub in zip(self.spec.robots, self.leaders, self.pubs, strict=True):
            idx = self.spec.dims_of(robot)
            values = q[idx]
            grip = float(leader.gripper.to_robot(values[-1])) if leader.gripper else values[-1]
            msg = JointState(name=[*ARM_JOINTS, "gripper"],
                             position=[*values[:6].tolist(), grip])
            msg.header.stamp = now.to_msg()
            pub.publish(msg)


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(ScriptedLeader, args)


if __name__ == "__main__":
    main()
