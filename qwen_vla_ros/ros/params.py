"""Declare a node's ROS parameters from its parameters dataclass (``qwen_vla_ros.params``):
each field becomes a parameter with its default and description; the values (overrides,
YAML, command line, ``ros2 param set``) come back as the validated dataclass."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from rcl_interfaces.msg import ParameterDescriptor

T = TypeVar("T")


def declare_fields(node, cls: type) -> None:
    """Declare every field of ``cls`` on ``node`` with its default and description."""
    for f in dataclasses.fields(cls):
        descriptor = ParameterDescriptor(description=f.metadata.get("description", ""))
        node.declare_parameter(f.name, f.default, descriptor)


def read(node, cls: type[T]) -> T:
    """``cls`` built from the node's current values; its ``__post_init__`` validates them (a
    bad value is a ConfigError naming it). Lifecycle nodes read at configure."""
    return cls(**{f.name: node.get_parameter(f.name).value for f in dataclasses.fields(cls)})


def declare(node, cls: type[T]) -> T:
    """Declare every field of ``cls`` on ``node`` and return the validated values."""
    declare_fields(node, cls)
    return read(node, cls)
