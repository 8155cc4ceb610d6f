"""One declaration per node parameter: a dataclass field with its default, its description and
its check. A node declares its ROS parameters from the dataclass (``ros/params.declare``) and
gets the validated object back; tests and docs read the same list. The model is
generate_parameter_library's one YAML per node, in Python, without ROS.

    @dataclass
    class FollowParams:
        rate_hz: float = param(20.0, "control rate", check=positive)
        def __post_init__(self) -> None:
            validate(self)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from qwen_vla_ros.errors import ConfigError

Check = Callable[[Any], "str | None"]


def param(default: Any, description: str, *, check: Check | None = None) -> Any:
    """A node parameter: ``default`` (its type is the ROS parameter's type), what it means,
    and an optional check returning why a value is wrong (None if fine)."""
    return dataclasses.field(default=default,
                             metadata={"description": description, "check": check})


def positive(value: Any) -> str | None:
    return None if isinstance(value, int | float) and math.isfinite(value) and value > 0 \
        else f"must be > 0, got {value!r}"


def at_least(low: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= low else f"must be >= {low}, got {value!r}"
    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {list(choices)}, got {value!r}"
    return check


def validate(obj: Any) -> None:
    """Run every field's check; one ConfigError naming each bad parameter."""
    errors = []
    for f in dataclasses.fields(obj):
        check = f.metadata.get("check")
        if check is not None:
            reason = check(getattr(obj, f.name))
            if reason:
                errors.append(f"{f.name} {reason}")
    if errors:
        raise ConfigError("; ".join(errors))


def described(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, description) of every parameter of ``cls``, in declaration order."""
    return [(f.name, f.default, f.metadata.get("description", ""))
            for f in dataclasses.fields(cls)]
