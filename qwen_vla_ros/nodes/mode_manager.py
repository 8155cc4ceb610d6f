"""mode_manager: who drives the robot. TELEOP, POLICY or HOLD, latched on ~/mode.

Switch with services (std_srvs/Trigger) ~/engage_teleop, ~/engage_policy, ~/hold, or from
RViz: an InteractiveMarkers display on ``/mode_manager/mode_menu`` shows a sphere whose
right-click menu offers Teleop / Policy / Hold; a Marker display on ~/mode_marker shows the
mode as text. Starts in HOLD.
"""

from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import InteractiveMarkerFeedback, InteractiveMarkerUpdate, Marker
from visualization_msgs.srv import GetInteractiveMarkers

from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.markers import menu_entry_mode, mode_menu_marker, mode_text_marker
from qwen_vla_ros.runtime.modes import Mode, ModeMachine


class ModeManager(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("mode_manager", **kwargs)
        self.frame_id = self.declare_parameter(
            "marker_frame", "world",
            ParameterDescriptor(description="frame the RViz mode markers are drawn in")).value
        self.machine = ModeMachine()
        self.pub = self.create_publisher(String, "~/mode", qos.LATCHED)
        self.text_pub = self.create_publisher(Marker, "~/mode_marker", qos.LATCHED)
        for name, mode in (("engage_teleop", Mode.TELEOP), ("engage_policy", Mode.POLICY),
                           ("hold", Mode.HOLD)):
            self.create_service(Trigger, f"~/{name}", self._service(mode))
        # Interactive-marker server side of the protocol.
        self._seq = 0
        self.im_update_pub = self.create_publisher(InteractiveMarkerUpdate,
                                                   "~/mode_menu/update", 100)
        self.create_service(GetInteractiveMarkers, "~/mode_menu/get_interactive_markers",
                            self._get_markers)
        self.create_subscription(InteractiveMarkerFeedback, "~/mode_menu/feedback",
                                 self._feedback, 100)
        self.create_timer(1.0, self._keep_alive)
        self._publish()

    def _switch(self, mode: Mode, reason: str) -> bool:
        now = self.get_clock().now().nanoseconds * 1e-9
        previous = self.machine.mode
        changed = self.machine.request(mode, now, reason=reason)
        if changed:
            self.get_logger().info(f"mode {previous.value} -> {mode.value} ({reason})")
            self._publish()
        return changed

    def _service(self, mode: Mode):
        def cb(_request, response):
            changed = self._switch(mode, "service")
            response.success = True
            response.message = mode.value + ("" if changed else " (already)")
            return response
        return cb

    def _feedback(self, msg: InteractiveMarkerFeedback) -> None:
        if msg.event_type != InteractiveMarkerFeedback.MENU_SELECT:
            return
        mode = menu_entry_mode(msg.menu_entry_id)
        if mode is None:
            self.get_logger().warning(f"unknown menu entry {msg.menu_entry_id} from RViz")
            return
        self._switch(mode, f"rviz menu ({msg.client_id or 'client'})")

    def _get_markers(self, _request, response):
        response.sequence_number = self._seq
        response.markers = [mode_menu_marker(self.machine.mode, self.frame_id)]
        return response

    def _keep_alive(self) -> None:
        self.im_update_pub.publish(InteractiveMarkerUpdate(
            server_id=self.get_fully_qualified_name(), seq_num=self._seq,
            type=InteractiveMarkerUpdate.KEEP_ALIVE))

    def _publish(self) -> None:
        mode = self.machine.mode
        self.pub.publish(String(data=mode.value))
        self.text_pub.publish(mode_text_marker(mode, self.frame_id,
                                               self.get_clock().now().to_msg()))
        self._seq += 1
        self.im_update_pub.publish(InteractiveMarkerUpdate(
            server_id=self.get_fully_qualified_name(), seq_num=self._seq,
            type=InteractiveMarkerUpdate.UPDATE, markers=[mode_menu_marker(mode,
                                                                          self.frame_id)]))


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(ModeManager, args)


if __name__ == "__main__":
    main()
