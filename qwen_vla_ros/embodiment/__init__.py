"""Embodiment descriptions: the data that makes a robot a robot (no rclpy, no torch)."""

from qwen_vla_ros.embodiment.spec import (
    Dim,
    EmbodimentSpec,
    GripperMap,
    available_embodiments,
    load_embodiment,
)

__all__ = ["Dim", "EmbodimentSpec", "GripperMap", "available_embodiments", "load_embodiment"]
