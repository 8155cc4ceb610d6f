"""What navigation_node publishes from its controller's decisions (``runtime.nav_control``):
velocity, the plan as a Path, the Nav2 goal, RViz markers and the latched status line."""

from __future__ import annotations

from geometry_msgs.msg import PoseStamped, Twist
from nav_msgs.msg import Path
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.conversions import pose_stamped
from qwen_vla_ros.ros.markers import waypoint_markers
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.nav_control import Outcome


class NavigationOutputs:
    """The publishers of navigation_node's outputs (topics in its module docstring), in the
    odom frame ``frame`` (navigation_node follows the odometry's frame_id)."""

    def __init__(self, node, frame: str, publish_goal: bool, warn) -> None:
        self.node, self.frame, self.publish_goal, self.warn = node, frame, publish_goal, warn
        self.status = ""
        self.cmd_pub = node.create_publisher(Twist, "cmd_vel", qos.COMMAND)
        self.path_pub = node.create_publisher(Path, "~/waypoints", qos.COMMAND)
        self.goal_pub = node.create_publisher(PoseStamped, "goal_pose", qos.COMMAND)
        self.marker_pub = node.create_publisher(MarkerArray, "~/markers", qos.COMMAND)
        self.status_pub = node.create_publisher(String, "~/status", qos.LATCHED)

    def header(self) -> Header:
        return Header(frame_id=self.frame, stamp=self.node.get_clock().now().to_msg())

    def set_status(self, text: str) -> None:
        """Publish (latched) and log the status line when it changes."""
        if text != self.status:
            self.status = text
            self.status_pub.publish(String(data=text))
            self.node.get_logger().info(f"status: {text}")

    def send(self, velocity) -> None:
        """cmd_vel, unless ``velocity`` is None (Nav2 drives)."""
        if velocity is None:
            return
        msg = Twist()
        msg.linear.x, msg.angular.z = velocity.v, velocity.w
        self.cmd_pub.publish(msg)

    def apply(self, out: Outcome, mode: Mode) -> None:
        """Publish what the controller decided, in the order a reader expects: velocity,
        plan, goal, status."""
        self.send(out.velocity)
        if out.warning:
            key, _, text = out.warning.partition(":")
            self.warn(key, text)
        if out.plan is not None:
            self._plan(out.plan, out.robot, mode)
        if out.goal_here is not None:
            g = out.goal_here
            self.goal_pub.publish(pose_stamped(PoseStamped, g.x, g.y, g.yaw, self.header()))
        if out.status:
            self.set_status(out.status)

    def _plan(self, plan, robot, mode: Mode) -> None:
        header = self.header()
        wps = [] if plan.stop_now else plan.waypoints
        path = Path(header=header, poses=[pose_stamped(PoseStamped, w[0], w[1], w[2], header)
                                          for w in wps])
        self.path_pub.publish(path)
        if path.poses and self.publish_goal and mode is Mode.POLICY:
            self.goal_pub.publish(path.poses[-1])
        xy = (robot.x, robot.y) if robot is not None else (0.0, 0.0)
        self.marker_pub.publish(waypoint_markers(wps, self.frame, header.stamp,
                                                 self.status or "", xy))
