"""mode_manager over the interactive-marker protocol, as RViz speaks it."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy")
from conftest import spinning, wait_for  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from visualization_msgs.msg import (  # noqa: E402
    InteractiveMarkerFeedback,
    InteractiveMarkerUpdate,
    Marker,
)
from visualization_msgs.srv import GetInteractiveMarkers  # noqa: E402

from qwen_vla_ros.ros import qos  # noqa: E402

pytestmark = pytest.mark.ros


def test_rviz_menu_switches_mode_and_text_follows():
    from qwen_vla_ros.nodes.mode_manager import ModeManager

    rclpy.init()
    try:
        mm = ModeManager()
        rviz = rclpy.create_node("fake_rviz_client")
        modes, texts, updates = [], [], []
        rviz.create_subscription(String, "/mode_manager/mode", lambda m: modes.append(m.data),
                                 qos.LATCHED)
        rviz.create_subscription(Marker, "/mode_manager/mode_marker",
                                 lambda m: texts.append(m.text), qos.LATCHED)
        rviz.create_subscription(InteractiveMarkerUpdate, "/mode_manager/mode_menu/update",
                                 updates.append, 100)
        feedback = rviz.create_publisher(InteractiveMarkerFeedback,
                                         "/mode_manager/mode_menu/feedback", 100)
        client = rviz.create_client(GetInteractiveMarkers,
                                    "/mode_manager/mode_menu/get_interactive_markers")
        with spinning(mm, rviz):
            check_menu(client, feedback, modes, texts, updates)
        mm.destroy_node()
        rviz.destroy_node()
    finally:
        rclpy.shutdown()


def check_menu(client, feedback, modes, texts, updates) -> None:
    """RViz's side: fetch the menu, pick Policy, see the mode, text and marker follow."""
    assert client.wait_for_service(timeout_sec=10)
    fut = client.call_async(GetInteractiveMarkers.Request())
    assert wait_for(fut.done)
    (marker,) = fut.result().markers
    titles = {e.id: e.title for e in marker.menu_entries}
    assert titles == {1: "Teleop", 2: "Policy", 3: "Hold"}
    assert wait_for(lambda: modes and modes[-1] == "HOLD" and texts and texts[-1] == "HOLD")
    policy_id = next(i for i, t in titles.items() if t == "Policy")
    assert wait_for(lambda: feedback.get_subscription_count() > 0)
    feedback.publish(InteractiveMarkerFeedback(
        client_id="/rviz/InteractiveMarkers", marker_name="mode", control_name="menu",
        event_type=InteractiveMarkerFeedback.MENU_SELECT, menu_entry_id=policy_id))
    assert wait_for(lambda: modes[-1] == "POLICY"), modes
    assert wait_for(lambda: texts[-1] == "POLICY")
    assert wait_for(lambda: any(u.type == InteractiveMarkerUpdate.KEEP_ALIVE
                                for u in updates), 3)
    full = [u for u in updates if u.type == InteractiveMarkerUpdate.UPDATE]
    assert full and full[-1].markers[0].description == "mode: POLICY"
