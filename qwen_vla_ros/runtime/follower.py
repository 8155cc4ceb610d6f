"""A pure-pursuit path follower for unicycle / differential-drive bases, without ROS.

Steers toward the point one lookahead distance along the path (curvature 2y/L^2 in the robot
frame), turns in place when that point is far off the heading, slows down to stop at the last
waypoint, turns in place there to the last waypoint's yaw (when the path has one), and limits
linear/angular velocity and acceleration. For robots without Nav2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qwen_vla_ros.runtime.navigation import Pose2D, wrap


@dataclass
class FollowerConfig:
    lookahead: float = 0.4  # m
    max_linear: float = 0.4  # m/s
    max_angular: float = 1.2  # rad/s
    max_linear_accel: float = 0.8  # m/s^2
    max_angular_accel: float = 3.0  # rad/s^2
    goal_tolerance: float = 0.12  # m: the last waypoint counts as reached inside this
    turn_in_place: float = 0.9  # rad: larger heading errors turn without driving
    heading_gain: float = 2.0  # rad/s per rad when turning in place
    # rad: at the last waypoint, turn in place to its yaw until within this (pi or more: the
    # yaw is ignored). 0.25 is Nav2's SimpleGoalChecker default yaw_goal_tolerance, and it is
    # stateful by default too (docs.nav2.org, controller server plugins: simple goal checker).
    yaw_tolerance: float = 0.25

    def validate(self) -> None:
        for name in ("lookahead", "max_linear", "max_angular", "max_linear_accel",
                     "max_angular_accel", "goal_tolerance", "turn_in_place", "heading_gain",
                     "yaw_tolerance"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"follower {name} must be > 0, got {v}")


class PurePursuit:
    def __init__(self, config: FollowerConfig | None = None) -> None:
        self.cfg = config or FollowerConfig()
        self.cfg.validate()
        self.path: np.ndarray | None = None  # [N, 2] odom frame
        self.goal_yaw: float | None = None  # the last waypoint's yaw, if the path has yaws
        self._progress = 0  # index of the path segment the robot is on (never goes back)
        self._arrived = False  # the last waypoint's position was reached: only turning now
        self.v = 0.0
        self.w = 0.0

    def set_path(self, path: np.ndarray, start: Pose2D) -> None:
        """A new path (odom frame), [N, 2] (x, y) or [N, 3] (x, y, yaw: the robot turns to
        the last yaw at the end); ``start`` (the robot now) is prepended as its first point,
        so the robot never drives back to a waypoint it has already passed."""
        p = np.asarray(path, dtype=np.float64)
        self.path = np.vstack([[start.x, start.y], p[:, :2]])
        self.goal_yaw = float(p[-1, 2]) if p.shape[1] > 2 else None
        self._progress = 0
        self._arrived = False

    def clear(self) -> None:
        self.path, self.goal_yaw, self._arrived = None, None, False

    def reset_velocity(self, v: float = 0.0, w: float = 0.0) -> None:
        self.v, self.w = v, w

    def _target(self, pose: Pose2D) -> tuple[np.ndarray, float]:
        """The lookahead point and the remaining path length from the robot."""
        path = self.path
        pos = np.array([pose.x, pose.y])
        # Advance the progress index to the closest segment ahead.
        best, best_d = self._progress, math.inf
        for i in range(self._progress, len(path) - 1):
            a, b = path[i], path[i + 1]
            ab = b - a
            u = float(np.clip(np.dot(pos - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0))
            d = float(np.linalg.norm(a + u * ab - pos))
            if d < best_d - 1e-9:
                best, best_d = i, d
        self._progress = best
        # Walk the lookahead distance along the path from the projection.
        a, b = path[best], path[best + 1] if best + 1 < len(path) else path[best]
        ab = b - a
        u = float(np.clip(np.dot(pos - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0))
        point = a + u * ab
        remaining = float(np.linalg.norm(b - point)) + sum(
            float(np.linalg.norm(path[j + 1] - path[j])) for j in range(best + 1, len(path) - 1))
        left = self.cfg.lookahead
        seg_start, i = point, best
        while i + 1 < len(path):
            seg = path[i + 1] - seg_start
            n = float(np.linalg.norm(seg))
            if n >= left:
                return seg_start + seg * (left / n), remaining
            left -= n
            seg_start, i = path[i + 1], i + 1
        return path[-1], remaining

    def step(self, pose: Pose2D, dt: float) -> tuple[float, float, bool]:
        """(linear, angular, done) for this control period; done: the last waypoint is
        within tolerance, in position and, if the path has yaws, in yaw (the command is then
        zero). Once its position is reached the robot only turns (stateful, as Nav2's goal
        checker), so the last slow metres cannot drift it back out and around again."""
        cfg = self.cfg
        if self.path is None or len(self.path) < 2:
            return (*self._limit(0.0, 0.0, dt, hard=True), True)
        goal = self.path[-1]
        if self._arrived or math.hypot(goal[0] - pose.x, goal[1] - pose.y) <= cfg.goal_tolerance:
            self._arrived = True
            error = float(wrap(self.goal_yaw - pose.yaw)) if self.goal_yaw is not None else 0.0
            if abs(error) <= cfg.yaw_tolerance:
                return (*self._limit(0.0, 0.0, dt, hard=True), True)
            w_ref = float(np.clip(cfg.heading_gain * error, -cfg.max_angular, cfg.max_angular))
            return (*self._limit(0.0, w_ref, dt), False)
        target, remaining = self._target(pose)
        local = pose.to_local(target[None])[0]
        heading = math.atan2(local[1], local[0])
        if abs(heading) > cfg.turn_in_place:
            v_ref = 0.0
            w_ref = float(np.clip(cfg.heading_gain * heading, -cfg.max_angular, cfg.max_angular))
        else:
            dist2 = max(float(local @ local), 1e-6)
            curvature = 2.0 * local[1] / dist2
            # Arrive at the end at zero speed: v <= sqrt(2 a d).
            v_ref = min(cfg.max_linear, math.sqrt(2.0 * cfg.max_linear_accel * remaining))
            w_ref = curvature * v_ref
            if abs(w_ref) > cfg.max_angular:  # keep the curvature, slow down
                v_ref *= cfg.max_angular / abs(w_ref)
                w_ref = math.copysign(cfg.max_angular, w_ref)
        v, w = self._limit(v_ref, w_ref, dt)
        return v, w, False

    def _limit(self, v_ref: float, w_ref: float, dt: float, hard: bool = False
               ) -> tuple[float, float]:
        """Acceleration limits (``hard``: stop now; the base's own controller brakes)."""
        cfg = self.cfg
        if hard:
            self.v, self.w = 0.0, 0.0
            return 0.0, 0.0
        dv, dw = cfg.max_linear_accel * dt, cfg.max_angular_accel * dt
        self.v = float(np.clip(v_ref, self.v - dv, self.v + dv))
        self.w = float(np.clip(w_ref, self.w - dw, self.w + dw))
        self.v = float(np.clip(self.v, -cfg.max_linear, cfg.max_linear))
        self.w = float(np.clip(self.w, -cfg.max_angular, cfg.max_angular))
        return self.v, self.w
