"""Joint position and per-step velocity limits: the last word before a command leaves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qwen_vla_ros.embodiment.spec import EmbodimentSpec


@dataclass(frozen=True)
class Limits:
    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray  # units per second

    @classmethod
    def from_spec(cls, spec: EmbodimentSpec) -> Limits:
        return cls(spec.lower(), spec.upper(), spec.max_velocity())

    def clamp(self, target: np.ndarray, previous: np.ndarray | None, dt: float
              ) -> tuple[np.ndarray, bool]:
        """At most max_velocity*dt away from ``previous``, and inside the position box.

        The box wins: from a ``previous`` outside it (a handover from a measured pose that
        gravity or a contact pushed past a joint limit, as the sim does by up to ~0.06 rad),
        the command goes to the box's edge, never past it. Returns (command, was_clamped).
        ``target`` must be finite (callers reject NaN first).
        """
        cmd = np.asarray(target, float)
        if previous is not None:
            step = self.max_velocity * dt
            cmd = np.clip(cmd, previous - step, previous + step)
        cmd = np.clip(cmd, self.lower, self.upper)
        clamped = bool(np.any(np.abs(cmd - target) > 1e-12))
        return cmd, clamped

    def within(self, x: np.ndarray, tol: float = 1e-9) -> bool:
        return bool(np.all(x >= self.lower - tol) and np.all(x <= self.upper + tol))
