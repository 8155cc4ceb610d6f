"""RViz visualisation messages for the mode manager: a menu marker and a mode text marker.

Speaks the standard interactive-marker protocol (what interactive_markers' server does, and
what RViz's InteractiveMarkers display expects) without that library, which some installs
lack: ``<ns>/get_interactive_markers`` service, ``<ns>/update`` topic (UPDATE, KEEP_ALIVE),
``<ns>/feedback`` subscription (MENU_SELECT).
"""

from __future__ import annotations

from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import (
    InteractiveMarker,
    InteractiveMarkerControl,
    Marker,
    MenuEntry,
)

from qwen_vla_ros.runtime.modes import Mode

MENU = (Mode.TELEOP, Mode.POLICY, Mode.HOLD)  # menu entry id = index + 1
COLORS = {Mode.TELEOP: (0.2, 0.6, 1.0), Mode.POLICY: (0.1, 0.9, 0.3), Mode.HOLD: (1.0, 0.6, 0.1)}


def menu_entry_mode(entry_id: int) -> Mode | None:
    return MENU[entry_id - 1] if 1 <= entry_id <= len(MENU) else None


def _color(mode: Mode, alpha: float = 1.0) -> ColorRGBA:
    r, g, b = COLORS[mode]
    return ColorRGBA(r=r, g=g, b=b, a=alpha)


def mode_menu_marker(mode: Mode, frame_id: str, name: str = "mode") -> InteractiveMarker:
    """A sphere with a right-click menu: Teleop / Policy / Hold."""
    im = InteractiveMarker(name=name, description=f"mode: {mode.value}", scale=0.2)
    im.header.frame_id = frame_id
    im.pose.position.z = 0.6
    im.pose.orientation.w = 1.0
    sphere = Marker(type=Marker.SPHERE, color=_color(mode))
    sphere.scale.x = sphere.scale.y = sphere.scale.z = 0.08
    sphere.pose.orientation.w = 1.0
    control = InteractiveMarkerControl(interaction_mode=InteractiveMarkerControl.MENU,
                                       always_visible=True, name="menu", markers=[sphere])
    control.orientation.w = 1.0
    im.controls = [control]
    im.menu_entries = [MenuEntry(id=i + 1, parent_id=0, title=m.value.capitalize(),
                                 command="", command_type=MenuEntry.FEEDBACK)
                       for i, m in enumerate(MENU)]
    return im


def mode_text_marker(mode: Mode, frame_id: str, stamp, note: str = "") -> Marker:
    """The mode as text; ``note``: why (e.g. the fault that brought it to HOLD), below it."""
    m = Marker(ns="qwen_vla_mode", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
               text=mode.value + (f"\n{note}" if note else ""), color=_color(mode))
    m.header.frame_id = frame_id
    m.header.stamp = stamp
    m.pose.position.z = 0.75
    m.pose.orientation.w = 1.0
    m.scale.z = 0.08
    return m


def waypoint_markers(waypoints, frame_id: str, stamp, status: str, robot_xy=(0.0, 0.0)):
    """VLN plan for RViz: path line, waypoint spheres, goal arrow, status text.

    ``waypoints``: [N, 3] (x, y, yaw) in ``frame_id``; may be empty (markers are deleted)."""
    import math

    from geometry_msgs.msg import Point
    from visualization_msgs.msg import MarkerArray

    def base(mid: int, mtype: int, rgb, alpha: float = 1.0) -> Marker:
        m = Marker(ns="vln", id=mid, type=mtype)
        m.header.frame_id = frame_id
        m.header.stamp = stamp
        m.pose.orientation.w = 1.0
        m.color = ColorRGBA(r=rgb[0], g=rgb[1], b=rgb[2], a=alpha)
        return m

    out = MarkerArray()
    pts = [Point(x=float(w[0]), y=float(w[1]), z=0.05) for w in waypoints]
    line = base(0, Marker.LINE_STRIP, (0.1, 0.9, 0.3))
    line.scale.x = 0.03
    spheres = base(1, Marker.SPHERE_LIST, (0.1, 0.6, 1.0))
    spheres.scale.x = spheres.scale.y = spheres.scale.z = 0.08
    goal = base(2, Marker.ARROW, (1.0, 0.5, 0.1))
    goal.scale.x, goal.scale.y, goal.scale.z = 0.35, 0.06, 0.06
    if pts:
        line.points, spheres.points = [Point(x=float(robot_xy[0]), y=float(robot_xy[1]),
                                             z=0.05), *pts], pts
        last = waypoints[-1]
        goal.pose.position = Point(x=float(last[0]), y=float(last[1]), z=0.05)
        goal.pose.orientation.z = math.sin(float(last[2]) / 2)
        goal.pose.orientation.w = math.cos(float(last[2]) / 2)
    else:
        for m in (line, spheres, goal):
            m.action = Marker.DELETE
    text = base(3, Marker.TEXT_VIEW_FACING, (1.0, 1.0, 1.0))
    text.scale.z = 0.18
    text.text = status
    text.pose.position = Point(x=float(robot_xy[0]), y=float(robot_xy[1]), z=0.8)
    out.markers = [line, spheres, goal, text]
    return out
