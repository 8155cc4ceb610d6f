"""mode_manager: who drives the robot. TELEOP, POLICY or HOLD, latched on ~/mode.

Services (std_srvs/Trigger): ~/engage_teleop, ~/engage_policy, ~/hold. Starts in HOLD.
"""

from __future__ import annotations

from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from qwen_vla_ros.ros import qos
from qwen_vla_ros.runtime.modes import Mode, ModeMachine


class ModeManager(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("mode_manager", **kwargs)
        self.machine = ModeMachine()
        self.pub = self.create_publisher(String, "~/mode", qos.LATCHED)
        for name, mode in (("engage_teleop", Mode.TELEOP), ("engage_policy", Mode.POLICY),
                           ("hold", Mode.HOLD)):
            self.create_service(Trigger, f"~/{name}", self._handler(mode))
        self._publish()

    def _handler(self, mode: Mode):
        def cb(_request, response):
            now = self.get_clock().now().nanoseconds * 1e-9
            previous = self.machine.mode
            changed = self.machine.request(mode, now, reason="service")
            if changed:
                self.get_logger().info(f"mode {previous.value} -> {mode.value}")
                self._publish()
            response.success = True
            response.message = f"{mode.value}" + ("" if changed else " (already)")
            return response
        return cb

    def _publish(self) -> None:
        self.pub.publish(String(data=self.machine.mode.value))


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(ModeManager, args)


if __name__ == "__main__":
    main()
