"""mode_manager: who drives the robot. TELEOP, POLICY or HOLD, latched on ~/mode.

Switch with services (std_srvs/Trigger) ~/engage_teleop, ~/engage_policy, ~/hold, or from
RViz: an InteractiveMarkers display on ``/mode_manager/mode_menu`` shows a sphere whose
right-click menu offers Teleop / Policy / Hold; a Marker display on ~/mode_marker shows the
mode as text. Starts in HOLD.

With ``adapters`` set (node names), the mode shown is what they really do, not only what was
asked: each adapter's ``/<name>/effective_mode`` (runtime/supervision.AdapterStatus) is watched.
An engage service is refused (success false, the reason; the mode stays) when an adapter says
it would refuse now (start-up failed, arms asleep); otherwise it succeeds and says which
adapters still wait and for what. An adapter that refuses later (no measured pose within its
``engage_timeout``) or falls back to HOLD by itself (policy lost, leader lost, ...) brings the
mode to HOLD, shown with the reason on the marker; nothing re-engages until someone asks.
"""

from __future__ import annotations

from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import InteractiveMarkerFeedback, InteractiveMarkerUpdate, Marker
from visualization_msgs.srv import GetInteractiveMarkers

from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.markers import menu_entry_mode, mode_menu_marker, mode_text_marker
from qwen_vla_ros.ros.params import declare
from qwen_vla_ros.runtime.modes import MODE_SERVICES, Mode, ModeMachine, ModeManagerParams
from qwen_vla_ros.runtime.supervision import AdapterStatus, Agreement


class ModeManager(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("mode_manager", **kwargs)
        params = declare(self, ModeManagerParams)
        self.frame_id = params.marker_frame
        self.agreement = Agreement([a for a in params.adapters if a])
        self.machine = ModeMachine()
        self.note = ""  # why the mode is what it is, when an adapter decided (marker text)
        for name in self.agreement.adapters:
            self.create_subscription(String, f"/{name}/effective_mode", self._status_cb(name),
                                     qos.LATCHED)
        self.pub = self.create_publisher(String, "~/mode", qos.LATCHED)
        self.text_pub = self.create_publisher(Marker, "~/mode_marker", qos.LATCHED)
        for name, mode in MODE_SERVICES.items():
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
            self.note = "" if reason in ("service",) or reason.startswith("rviz") else reason
            self.get_logger().info(f"mode {previous.value} -> {mode.value} ({reason})")
            self._publish()
        return changed

    def _service(self, mode: Mode):
        def cb(_request, response):
            refused = self.agreement.refusal(mode)
            if refused is not None:
                self.get_logger().error(f"{mode.value} refused: {refused}")
                response.success, response.message = False, f"{mode.value} refused: {refused}"
                return response
            changed = self._switch(mode, "service")
            self.note = ""
            if not changed:  # said again: an adapter that fell back to HOLD engages anew
                self._publish()
            verdict, why = self.agreement.verdict(mode)
            response.success = True  # a later refusal or fault shows as HOLD with its reason
            response.message = mode.value + ("" if changed else " (already)") + (
                f"; {why}" if verdict == "waiting" and mode is not Mode.HOLD else "")
            return response
        return cb

    def _status_cb(self, name: str):
        def cb(msg: String) -> None:
            try:
                status = AdapterStatus.from_json(msg.data)
            except ValueError as exc:
                self.get_logger().error(f"{name}: {exc}", throttle_duration_sec=5.0)
                return
            self.agreement.update(name, status)
            fault = self.agreement.fault_against(self.machine.mode)
            if fault is not None:
                self._switch(Mode.HOLD, fault)
        return cb

    def _feedback(self, msg: InteractiveMarkerFeedback) -> None:
        if msg.event_type != InteractiveMarkerFeedback.MENU_SELECT:
            return
        mode = menu_entry_mode(msg.menu_entry_id)
        if mode is None:
            self.get_logger().warning(f"unknown menu entry {msg.menu_entry_id} from RViz")
            return
        refused = self.agreement.refusal(mode)
        if refused is not None:
            self.get_logger().error(f"{mode.value} refused: {refused}")
            self.note = f"{mode.value} refused: {refused}"
            self._publish()
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
                                               self.get_clock().now().to_msg(), self.note))
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
