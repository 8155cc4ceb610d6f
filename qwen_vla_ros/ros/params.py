"""Declare a node's ROS parameters from its parameters dataclass (``qwen_vla_ros.params``):
each field becomes a parameter with its default and description; the values (overrides,
YAML, command line, ``ros2 param set``) come back as the validated dataclass."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterable
from typing import TypeVar

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

T = TypeVar("T")


def declare_fields(node, cls: type) -> None:
    """Declare every field of ``cls`` on ``node`` with its default and description."""
    for f in dataclasses.fields(cls):
        descriptor = ParameterDescriptor(description=f.metadata.get("description", ""))
        node.declare_parameter(f.name, f.default, descriptor)


def require_parameters(node, names: Iterable[str]) -> None:
    """A ConfigError naming each of ``names`` that ``node`` does not declare: an override of an
    undeclared parameter is dropped silently by rclpy (a misspelt ``eval --param``)."""
    from qwen_vla_ros.errors import ConfigError

    unknown = [n for n in names if not node.has_parameter(n)]
    if unknown:
        raise ConfigError(f"{node.get_name()} has no parameter {', '.join(unknown)}")


def read(node, cls: type[T]) -> T:
    """``cls`` built from the node's current values; its ``__post_init__`` validates them (a
    bad value is a ConfigError naming it). Lifecycle nodes read at configure."""
    return cls(**{f.name: node.get_parameter(f.name).value for f in dataclasses.fields(cls)})


def declare(node, cls: type[T], live: Iterable[str] = ()) -> T:
    """Declare every field of ``cls`` on ``node``, guard later changes (``guard``) and return
    the validated values."""
    declare_fields(node, cls)
    values = read(node, cls)
    guard(node, cls, live=live)
    return values


def keyed(node, prefix: str, key: str, default, description: str, keys: Iterable[str],
          what: str = "known names"):
    """The parameter ``prefix.key``: one per camera or robot, so the names depend on the
    configuration and are declared when it is known (read again if already declared). An
    override ``prefix.X`` for an X not in ``keys`` is a ValueError naming ``what`` the known
    ones are."""
    overrides = getattr(node, "_parameter_overrides", {})
    unknown = sorted({k.split(".", 1)[1] for k in overrides if k.startswith(prefix + ".")}
                     - set(keys))
    if unknown:
        raise ValueError(f"{prefix} names {unknown}, which are not {what} ({sorted(keys)})")
    name = f"{prefix}.{key}"
    if node.has_parameter(name):
        return node.get_parameter(name).value
    return node.declare_parameter(name, default,
                                  ParameterDescriptor(description=description)).value


def guard(node, cls: type, live: Iterable[str] = (), reread_at: str = "") -> None:
    """Check every later change (``ros2 param set``) of ``cls``'s parameters: a value that
    fails its check is refused with the reason. The node reads most parameters once; changing
    one of those is refused too, saying when it is read, unless ``reread_at`` names the moment
    it is read again (a lifecycle node's configure): then it is accepted for that moment.
    ``live``: parameters the node reads while running."""
    names = {f.name for f in dataclasses.fields(cls)}
    live = set(live)
    # A weak reference: the node holds this callback, and a cycle would keep a destroyed node
    # (and what it owns, e.g. a MuJoCo renderer) alive until interpreter exit.
    ref = weakref.ref(node)

    def on_set(params) -> SetParametersResult:
        owner = ref()
        if owner is None:
            return SetParametersResult(successful=True)
        values = {n: owner.get_parameter(n).value for n in names}
        for p in params:
            if p.name not in names:
                continue
            if p.name not in live and not reread_at:
                return SetParametersResult(successful=False, reason=(
                    f"{p.name} is read at start-up: restart {owner.get_name()} to change it"))
            values[p.name] = p.value
        try:
            cls(**values)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
