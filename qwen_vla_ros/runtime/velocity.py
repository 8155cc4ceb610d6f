"""Position commands -> velocity commands, and velocity dims -> a planar Twist."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.params import one_of, param
from qwen_vla_ros.runtime.supervision import AdapterParams

OUTPUTS = ("float64_array", "twist")

# Dimension names a base embodiment uses for its velocity axes.
TWIST_AXES = {"vx": ("linear", "x"), "vy": ("linear", "y"), "vz": ("linear", "z"),
              "wx": ("angular", "x"), "wy": ("angular", "y"), "wz": ("angular", "z")}


@dataclass
class VelocityAdapterParams(AdapterParams):
    """velocity_adapter's parameters: every adapter's, and what it publishes."""

    output: str = param("float64_array", f"one of {OUTPUTS}", check=one_of(*OUTPUTS))


def position_to_velocity(command: np.ndarray, previous: np.ndarray, dt: float) -> np.ndarray:
    """Finite difference of consecutive (already velocity-limited) position commands."""
    return (np.asarray(command, float) - np.asarray(previous, float)) / dt


def twist_axes(spec: EmbodimentSpec) -> list[tuple[int, str, str]]:
    """(dim index, 'linear'|'angular', axis) for each dim named like vx / wz."""
    axes = [(i, *TWIST_AXES[d.name]) for i, d in enumerate(spec.action) if d.name in TWIST_AXES]
    unknown = [d.name for d in spec.action if d.name not in TWIST_AXES]
    if unknown:
        raise ValueError(f"embodiment '{spec.name}': dims {unknown} are not Twist axes "
                         f"({sorted(TWIST_AXES)})")
    return axes
