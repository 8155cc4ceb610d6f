"""The base's obstacle stop, without ROS: how far a round footprint can drive straight ahead
(or back) before it comes within a clearance of a range return, and the speed from which it
can still brake in that distance.

The model's waypoints and the pure-pursuit follower know nothing of what the camera does not
show, and the follower has no map; a planar range scan (sensor_msgs/LaserScan) is the last
check before cmd_vel. Only the linear speed is limited: a round base turning in place sweeps
no new ground, so it can always turn away. The path ahead is taken as straight over the
braking distance (a conservative cut for the follower's gentle arcs at these speeds; the
clearance covers the rest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FreeSpace:
    """What one scan leaves free, in m along the base's heading: ``ahead`` (driving forward)
    and ``behind`` (reversing); inf where nothing is in the way."""

    ahead: float
    behind: float
    stamp: float

    def speed_limit(self, v: float, decel: float, travelled: float = 0.0) -> float:
        """The largest |v| in the direction of ``v`` from which the base stops (at
        ``decel``) within the free distance less ``travelled`` (m driven since the scan):
        sqrt(2 a d); 0 where nothing is free."""
        free = (self.ahead if v >= 0 else self.behind) - travelled
        return math.inf if math.isinf(free) else math.sqrt(2.0 * decel * max(free, 0.0))


def free_space(angles: np.ndarray, ranges: np.ndarray, radius: float, clearance: float,
               stamp: float, range_min: float = 0.0) -> FreeSpace:
    """``angles`` (rad, base frame, counter-clockwise from ahead) and ``ranges`` (m from the
    base centre) of one scan; returns below ``range_min``, NaN and inf are not obstacles (a
    LaserScan's "no return"). A point (x, y) ahead within ``radius + clearance`` of the
    straight path stops the footprint at x - sqrt((radius + clearance)^2 - y^2)."""
    a = np.asarray(angles, np.float64)
    r = np.asarray(ranges, np.float64)
    if a.shape != r.shape:
        raise ValueError(f"scan has {a.size} angles and {r.size} ranges")
    ok = np.isfinite(r) & (r >= range_min)
    x, y = r[ok] * np.cos(a[ok]), r[ok] * np.sin(a[ok])
    half = radius + clearance
    lateral = np.abs(y) < half
    reach = np.sqrt(np.maximum(half * half - y * y, 0.0))

    def first(along: np.ndarray) -> float:
        hit = lateral & (along > 1e-6)  # in the swept corridor, ahead: driving closes on it
        return float(max(np.min(along[hit] - reach[hit]), 0.0)) if np.any(hit) else math.inf

    return FreeSpace(ahead=first(x), behind=first(-x), stamp=stamp)
