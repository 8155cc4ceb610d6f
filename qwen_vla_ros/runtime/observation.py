"""Assemble the policy's observation from the latest sensor data, or say why not.

Joint states arrive per hardware namespace (ALOHA: one JointState per follower arm) and are
merged by joint NAME through the embodiment spec; grippers are converted to the normalised
opening there, once (a follower gripper from its finger slide, a leader's from its motor
angle: embodiment/gripper.py). Every input carries its own stamp; too old, missing or
non-finite data gives a rejection reason instead of an observation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qwen_vla_ros.embodiment.gripper import GripperMap
from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.runtime.pacing import TIME_EPS


@dataclass
class Rejection:
    reason: str

    def __str__(self) -> str:
        return self.reason


class JointStateMerger:
    """(robot namespace, joint name) -> the spec's state vector, in embodiment units.

    ``leaders=True`` reads the teleop leader arms instead: each follower's dims are taken from
    its leader's namespace, with the leader's gripper range (spec ``teleop``).
    """

    def __init__(self, spec: EmbodimentSpec, leaders: bool = False) -> None:
        self.spec = spec
        self._index: dict[tuple[str, str], int] = {}
        self._grippers: dict[int, GripperMap] = {}
        for i, name in enumerate(spec.state):
            d = spec.dim(name)
            robot = d.robot or ""
            joint, gripper = d.measured_as()  # a follower gripper: its finger slide (m)
            if leaders:
                leader = spec.leader_of(robot)
                if leader is None:
                    raise ValueError(f"embodiment '{spec.name}' has no leader for '{robot}'")
                robot = leader.robot
                # a leader gripper is read as its motor angle (rad)
                joint = d.joint or d.name
                gripper = leader.gripper if d.gripper is not None else None
            self._index[(robot, joint)] = i
            if gripper is not None:
                self._grippers[i] = gripper
        self._values = np.full(spec.state_dim, np.nan)
        self._stamps = np.full(spec.state_dim, -np.inf)

    def robots(self) -> list[str]:
        return sorted({robot for robot, _ in self._index})

    def update(self, robot: str, names: Sequence[str], positions: Sequence[float],
               stamp: float) -> str | None:
        """Take one JointState; returns a rejection reason, or None if accepted."""
        if len(names) != len(positions):
            return (f"joint state from '{robot}': {len(names)} names but {len(positions)} "
                    "positions")
        hits = [(self._index[(robot, n)], float(p)) for n, p in zip(names, positions, strict=True)
                if (robot, n) in self._index]
        if not hits:
            return (f"joint state from '{robot}' has none of the expected joints "
                    f"(got {list(names)[:8]})")
        values = np.array([p for _, p in hits])
        if not np.all(np.isfinite(values)):
            bad = [n for n, p in zip(names, positions, strict=True)
                   if (robot, n) in self._index and not np.isfinite(p)]
            # The sensor is reporting garbage now: the last good value no longer describes
            # the robot, so those joints are invalid until a finite reading arrives.
            for i, p in hits:
                if not np.isfinite(p):
                    self._values[i] = np.nan
            return f"joint state from '{robot}' has non-finite positions for {bad}"
        for i, p in hits:
            g = self._grippers.get(i)
            self._values[i] = float(g.to_normalised(p)) if g is not None else p
            self._stamps[i] = stamp
        return None

    def state(self, now: float, max_age: float) -> np.ndarray | Rejection:
        if self.spec.state_dim == 0:
            return np.zeros(0)  # nothing is measured (e.g. a velocity-driven base)
        missing = [self.spec.state[i] for i in np.flatnonzero(~np.isfinite(self._values))]
        if missing:
            return Rejection(f"no valid joint state for {missing}")
        age = now - self._stamps.min()
        if age > max_age:
            oldest = self.spec.state[int(np.argmin(self._stamps))]
            return Rejection(f"joint state is stale: '{oldest}' is {age * 1e3:.0f} ms old "
                             f"(max {max_age * 1e3:.0f} ms)")
        return self._values.copy()

    def oldest_stamp(self) -> float:
        return float(self._stamps.min()) if len(self._stamps) else float("inf")

    def stamps(self) -> dict[str, float]:
        """Per robot namespace: the stamp of its oldest joint in the current state."""
        out: dict[str, float] = {}
        for (robot, _), i in self._index.items():
            out[robot] = min(out.get(robot, np.inf), float(self._stamps[i]))
        return out


class ImageBuffer:
    """Latest frame per camera, with its stamp."""

    def __init__(self, cameras: Sequence[str]) -> None:
        self.cameras = tuple(cameras)
        self._frames: dict[str, tuple[np.ndarray, float]] = {}
        self._period: dict[str, float] = {}  # between a camera's last two frames

    def put(self, camera: str, image: np.ndarray, stamp: float) -> None:
        if camera not in self.cameras:
            raise KeyError(f"unknown camera '{camera}'; expected one of {list(self.cameras)}")
        if camera in self._frames and stamp > self._frames[camera][1]:
            self._period[camera] = stamp - self._frames[camera][1]
        self._frames[camera] = (image, stamp)

    def due(self, now: float, max_age: float, eps: float = TIME_EPS) -> list[str]:
        """Cameras whose next frame, at their last rate, was due by ``now`` and has not
        come (while their last one is still fresh): a paced sim published it before its
        clock read ``now``; it is on its way."""
        return [c for c, (_, s) in self._frames.items()
                if c in self._period and s + self._period[c] <= now + eps
                and now - s <= max_age]

    def images(self, now: float, max_age: float) -> Mapping[str, np.ndarray] | Rejection:
        missing = [c for c in self.cameras if c not in self._frames]
        if missing:
            return Rejection(f"no image yet from camera(s) {missing}")
        stale = {c: now - s for c, (_, s) in self._frames.items() if now - s > max_age}
        if stale:
            worst = max(stale, key=stale.__getitem__)
            return Rejection(f"camera '{worst}' is stale: {stale[worst] * 1e3:.0f} ms old "
                             f"(max {max_age * 1e3:.0f} ms)")
        return {c: img for c, (img, _) in self._frames.items()}

    def latest(self, camera: str) -> tuple[np.ndarray, float] | None:
        """``camera``'s last frame and its stamp, or None before its first."""
        return self._frames.get(camera)

    def oldest_stamp(self) -> float:
        return min((s for _, s in self._frames.values()), default=-np.inf)

    def stamps(self) -> dict[str, float]:
        return {c: s for c, (_, s) in self._frames.items()}


def history_label(camera: str, age: float) -> str:
    """How a past frame is introduced to the model ("front 2.0 s ago"): the live node and
    training (learning/train.py) label history frames with this one function."""
    return f"{camera} {age:.1f} s ago"


class FrameHistory:
    """Past frames of one camera, sampled by time: a frame is kept when it is at least
    ``period`` s after the last kept one; at most ``length`` are returned (bounded memory)."""

    def __init__(self, camera: str, length: int, period: float) -> None:
        if length < 0 or not period > 0:
            raise ValueError(f"history needs length >= 0 and period > 0, got {length}, {period}")
        self.camera, self.length, self.period = camera, int(length), float(period)
        self._kept: deque[tuple[float, np.ndarray]] = deque(maxlen=self.length + 1)

    def put(self, image: np.ndarray, stamp: float) -> None:
        if self.length == 0:
            return
        if self._kept and stamp < self._kept[-1][0] - self.period:
            self._kept.clear()  # time went backwards (bag loop, sim reset): start again
        if not self._kept or stamp - self._kept[-1][0] >= self.period - 1e-9:
            self._kept.append((stamp, image))

    def clear(self) -> None:
        self._kept.clear()

    def frames(self, current: float) -> list[tuple[float, np.ndarray]]:
        """(stamp, image), oldest first: kept frames at least period/2 older than
        ``current`` (the live frame's stamp), the newest ``length`` of them."""
        past = [(t, im) for t, im in self._kept if t <= current - 0.5 * self.period]
        return past[-self.length:] if self.length else []
