"""Declare a node's ROS parameters from its parameters dataclass (``qwen_vla_ros.params``):
each field becomes a parameter with its default and description; the values (overrides,
YAML, command line) come back as the validated dataclass."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from rcl_interfaces.msg import ParameterDescriptor

T = TypeVar("T")


def declare(node, cls: type[T]) -> T:
    """Declare every field of ``cls`` on ``node``; return ``cls`` built from the values
    (its ``__post_init__`` validates them: a bad value is a ConfigError naming it)."""
    values = {}
    for f in dataclasses.fields(cls):
        descriptor = ParameterDescriptor(description=f.metadata.get("description", ""))
        values[f.name] = node.declare_parameter(f.name, f.default, descriptor).value
    return cls(**values)
