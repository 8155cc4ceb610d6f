"""Embodiment descriptions: the data that makes a robot a robot (no rclpy, no torch)."""

from qwen_vla_ros.embodiment.gripper import Gripper, GripperMap
from qwen_vla_ros.embodiment.spec import (
    Dim,
    EmbodimentSpec,
    available_embodiments,
    load_embodiment,
)

__all__ = ["Dim", "EmbodimentSpec", "Gripper", "GripperMap", "available_embodiments",
           "load_embodiment"]
