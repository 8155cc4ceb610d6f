"""trajectory_adapter: action chunks -> a ros2_control joint_trajectory_controller.

Runs the shared ChunkExecutor at the embodiment's control rate. In POLICY mode it publishes a
one-point JointTrajectory per tick (time_from_start = one control period) with the command the
executor returns (latency-skipped, blended, clamped, or holding). Entering POLICY starts from
the measured pose, so the handover ramps within the velocity limit. In TELEOP / HOLD it
publishes nothing: the controller keeps its last goal.

Topics: sub ~/action_chunk (JointTrajectory from policy_node), joint_states (JointState),
mode (std_msgs/String, latched; remap to /mode_manager/mode); pub joint_trajectory.
"""

from __future__ import annotations

import rclpy
from builtin_interfaces.msg import Duration
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.conversions import stamp_to_sec, trajectory_to_chunk
from qwen_vla_ros.runtime.executor import Chunk, ChunkExecutor, RejectedChunk
from qwen_vla_ros.runtime.limits import Limits
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.observation import JointStateMerger, Rejection


class TrajectoryAdapter(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("trajectory_adapter", **kwargs)
        d = ParameterDescriptor
        p = self.declare_parameter
        p("embodiment", "vx300s_single", d(description="embodiment name"))
        p("blend", "ensemble", d(description="ensemble (ACT temporal ensembling) or rtc"))
        p("max_state_age", 0.2, d(description="s; older measured pose -> no handover"))
        self.spec = load_embodiment(self.get_parameter("embodiment").value)
        self.merger = JointStateMerger(self.spec)
        self.chunk_executor = ChunkExecutor(Limits.from_spec(self.spec), self.spec.dt,
                                      mode=self.get_parameter("blend").value)
        self.max_state_age = float(self.get_parameter("max_state_age").value)
        self.mode = Mode.HOLD
        self.hw_names = [dim.joint or dim.name for dim in self.spec.action]
        if len(set(self.hw_names)) != len(self.hw_names):
            self.hw_names = [dim.name for dim in self.spec.action]
        self.grippers = [(i, dim.gripper) for i, dim in enumerate(self.spec.action)
                         if dim.gripper is not None]
        self.create_subscription(JointTrajectory, "~/action_chunk", self._chunk_cb, qos.COMMAND)
        self.create_subscription(JointState, "joint_states", self._joint_cb, qos.SENSOR)
        self.create_subscription(String, "mode", self._mode_cb, qos.LATCHED)
        self.pub = self.create_publisher(JointTrajectory, "joint_trajectory", qos.COMMAND)
        self.create_timer(self.spec.dt, self._tick)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _joint_cb(self, msg: JointState) -> None:
        stamp = stamp_to_sec(msg.header.stamp) or self.now()
        for robot in self.merger.robots():
            reason = self.merger.update(robot, list(msg.name), list(msg.position), stamp)
            if reason:
                self.get_logger().warning(f"joint state rejected: {reason}",
                                          throttle_duration_sec=2.0)

    def _chunk_cb(self, msg: JointTrajectory) -> None:
        try:
            actions, stamp, dt = trajectory_to_chunk(msg, self.spec.action_names)
            self.chunk_executor.add_chunk(Chunk(actions, stamp, dt))
        except (ValueError, RejectedChunk) as exc:
            self.get_logger().error(f"chunk rejected: {exc}")

    def _mode_cb(self, msg: String) -> None:
        try:
            mode = Mode.parse(msg.data)
        except ValueError as exc:
            self.get_logger().error(str(exc))
            return
        if mode == self.mode:
            return
        if mode is Mode.POLICY:
            measured = self.merger.state(self.now(), self.max_state_age)
            if isinstance(measured, Rejection):
                self.get_logger().error(f"not engaging POLICY: {measured}")
                self.mode = Mode.HOLD
                return
            self.chunk_executor.reset(measured)  # ramp from where the robot is
        self.mode = mode
        self.get_logger().info(f"mode {mode.value}")

    def _tick(self) -> None:
        if self.mode is not Mode.POLICY:
            return
        now = self.now()
        cmd = self.chunk_executor.step(now)
        if cmd is None:
            return
        position = cmd.position.copy()
        for i, g in self.grippers:
            position[i] = float(g.to_robot(position[i]))
        msg = JointTrajectory(joint_names=self.hw_names)
        msg.header.stamp = self.get_clock().now().to_msg()
        ns = int(self.spec.dt * 1e9)
        msg.points = [JointTrajectoryPoint(positions=position.tolist(),
                                           time_from_start=Duration(sec=0, nanosec=ns))]
        self.pub.publish(msg)


def main(args=None) -> None:
    rclpy.init(args=args)
    node = TrajectoryAdapter()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
