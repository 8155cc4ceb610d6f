"""Vision-language navigation without ROS: poses, waypoint transforms, the stop decision and
the navigator's state machine.

The VLN embodiment predicts, at an observation time t_obs, waypoints (x, y, yaw) in the robot
frame *of that moment* plus a stop flag per step. They are placed in the odom frame with the
robot's odometry pose at t_obs (interpolated from the pose history), not the pose "now":
the robot kept moving while the model ran.

Stop semantics (docs/vln.md): stop >= threshold on the first step means "the goal is reached,
stop now"; on a later step k, the path ends at waypoint k and reaching it means the goal is
reached. Either way the navigator is STOPPED and takes no new goals until a new instruction.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

from qwen_vla_ros.runtime.observation import Rejection


def wrap(angle: float | np.ndarray) -> float | np.ndarray:
    """Angle(s) to (-pi, pi]."""
    return np.arctan2(np.sin(angle), np.cos(angle))


@dataclass(frozen=True)
class Pose2D:
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0

    def compose(self, local: np.ndarray) -> np.ndarray:
        """Points [N, 3] (x, y, yaw) given in this pose's frame -> the parent frame."""
        local = np.atleast_2d(np.asarray(local, dtype=np.float64))
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        out = np.empty_like(local)
        out[:, 0] = self.x + c * local[:, 0] - s * local[:, 1]
        out[:, 1] = self.y + s * local[:, 0] + c * local[:, 1]
        out[:, 2] = wrap(self.yaw + local[:, 2])
        return out

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """Points [N, 2+] in the parent frame -> this pose's frame (x, y only)."""
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))[:, :2] - (self.x, self.y)
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1]], axis=1)


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def quaternion_from_yaw(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation about z."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


class PoseHistory:
    """Odometry poses of the last ``window`` seconds, to look up the pose at a past stamp."""

    def __init__(self, window: float = 5.0, max_extrapolation: float = 0.1) -> None:
        self.window, self.max_extrapolation = float(window), float(max_extrapolation)
        self._poses: deque[tuple[float, Pose2D]] = deque()

    def add(self, stamp: float, pose: Pose2D) -> str | None:
        """Returns a rejection reason, or None."""
        if not all(math.isfinite(v) for v in (stamp, pose.x, pose.y, pose.yaw)):
            return f"odometry has non-finite values ({pose})"
        if self._poses and stamp < self._poses[-1][0]:
            self._poses.clear()  # time went backwards (sim reset, bag loop): start again
        self._poses.append((stamp, pose))
        while self._poses and self._poses[0][0] < stamp - self.window:
            self._poses.popleft()
        return None

    def latest(self) -> tuple[float, Pose2D] | None:
        return self._poses[-1] if self._poses else None

    def at(self, stamp: float) -> Pose2D | Rejection:
        """Pose at ``stamp``: interpolated, or held for up to ``max_extrapolation`` s past
        either end (odometry and camera are not sampled together)."""
        if not self._poses:
            return Rejection("no odometry yet")
        t0, first = self._poses[0]
        t1, last = self._poses[-1]
        if stamp < t0 - self.max_extrapolation:
            return Rejection(f"observation at {stamp:.3f} is older than the odometry history "
                             f"({t0:.3f}..{t1:.3f}; window {self.window:g} s)")
        if stamp > t1 + self.max_extrapolation:
            return Rejection(f"observation at {stamp:.3f} is newer than the last odometry "
                             f"({t1:.3f})")
        if stamp <= t0:
            return first
        if stamp >= t1:
            return last
        times = [t for t, _ in self._poses]
        i = int(np.searchsorted(times, stamp))
        (ta, a), (tb, b) = self._poses[i - 1], self._poses[i]
        u = (stamp - ta) / (tb - ta) if tb > ta else 0.0
        return Pose2D(a.x + u * (b.x - a.x), a.y + u * (b.y - a.y),
                      float(wrap(a.yaw + u * wrap(b.yaw - a.yaw))))


@dataclass
class Plan:
    """A chunk placed in the odom frame."""

    stamp: float  # observation time
    waypoints: np.ndarray  # [N, 3] odom frame (x, y, yaw), truncated at the stop step
    stop_now: bool  # the model says the goal is reached
    final: bool  # the path ends where the model wants to stop
    clipped: int = 0  # predicted values beyond the embodiment's limits by > CLIP_SLACK


# Of a dim's range: a sampled output lands a hair outside a bounded range (a stop flag at
# 1.01), clipped without a count; beyond this share it is counted (the node warns).
CLIP_SLACK = 0.02


def plan_from_chunk(actions: np.ndarray, names: list[str], pose: Pose2D, stamp: float,
                    stop_threshold: float = 0.5, lower: np.ndarray | None = None,
                    upper: np.ndarray | None = None) -> Plan:
    """[H, D] with dims x, y, yaw, stop (robot frame at ``stamp``) -> odom-frame plan.
    ``lower``/``upper`` (the embodiment's limits, per dim): waypoints beyond them are clipped
    to them, never followed as predicted; ``Plan.clipped`` counts the values that were
    beyond a limit by more than ``CLIP_SLACK`` of the dim's range."""
    idx = {n: i for i, n in enumerate(names)}
    missing = [n for n in ("x", "y", "yaw") if n not in idx]
    if missing:
        raise ValueError(f"waypoint chunk lacks dims {missing} (has {names})")
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or len(a) == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"waypoint chunk must be a finite [H, D] array, got {a.shape}")
    clipped = 0
    if lower is not None and upper is not None:
        lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
        inside = np.clip(a, lower, upper)
        clipped = int(np.count_nonzero(np.abs(inside - a) > CLIP_SLACK * (upper - lower)))
        a = inside
    local = a[:, [idx["x"], idx["y"], idx["yaw"]]]
    stop = a[:, idx["stop"]] >= stop_threshold if "stop" in idx else np.zeros(len(a), bool)
    if stop[0]:
        return Plan(stamp, pose.compose(local[:1]), True, True, clipped)
    k = int(np.argmax(stop)) if stop.any() else len(a) - 1
    return Plan(stamp, pose.compose(local[: k + 1]), False, bool(stop.any()), clipped)


class NavState(str, Enum):
    IDLE = "IDLE"  # no instruction
    NAVIGATING = "NAVIGATING"
    STOPPED = "STOPPED"  # the model said stop / the final waypoint was reached


class Navigator:
    """Instruction and stop bookkeeping: which plan the follower should drive, if any.

    ``confirmations``: how many stop votes in a row end the episode. A vote is a plan whose
    stop flag is set at its first step, or reaching the end of a path that ends in a stop;
    a plan that drives on past its horizon (no stop in it) clears the votes. Below the count
    the base holds still (no plan) and the next plan decides: the stop flag is a sampled
    output, and a second look from the same place (a new noise draw) catches a stop called
    by chance. 1: the first vote stops."""

    def __init__(self, confirmations: int) -> None:
        if confirmations < 1:
            raise ValueError(f"stop confirmations must be >= 1, got {confirmations}")
        self.confirmations = confirmations
        self.state = NavState.IDLE
        self.plan: Plan | None = None
        self.reason = "no instruction yet"
        self.votes = 0  # stop votes in a row

    def new_instruction(self) -> None:
        self.state, self.plan, self.reason = NavState.NAVIGATING, None, "new instruction"
        self.votes = 0

    def offer(self, plan: Plan) -> bool:
        """A new plan from the model; returns whether it was taken."""
        if self.state is not NavState.NAVIGATING:
            return False  # STOPPED takes no new goals until a new instruction
        if plan.stop_now:
            self._vote("the policy decided the goal is reached")
            return True
        if not plan.final:
            self.votes = 0
        self.plan = plan
        return True

    def reached_end(self) -> None:
        """The follower reached the plan's last waypoint."""
        if self.plan is not None and self.plan.final:
            self._vote("reached the final waypoint")

    def _vote(self, reason: str) -> None:
        self.votes += 1
        if self.votes >= self.confirmations:
            self.stop(reason)
            return
        self.plan = None
        self.reason = (f"stop proposed ({self.votes} of {self.confirmations}: {reason}); "
                       "holding still for the next plan")

    @property
    def proposing_stop(self) -> bool:
        """Holding still for the next plan after a stop vote (not yet enough of them)."""
        return self.state is NavState.NAVIGATING and self.votes > 0 and self.plan is None

    def stop(self, reason: str) -> None:
        self.state, self.plan, self.reason = NavState.STOPPED, None, reason
