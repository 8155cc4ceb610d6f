"""Bag log time <-> the clock the nodes ran on, and the time axis summaries use.

Under a simulator the nodes run on /clock (sim time) while the bag logs receive (wall) time;
rates and transition times computed from log times are wrong on a loaded machine. So with
/clock recorded, summaries use sim seconds; without it (a real robot), seconds since the bag's
start."""

from __future__ import annotations

import numpy as np


class Clock:
    """Bag log time <-> the clock the nodes ran on (/clock if recorded, else log time)."""

    def __init__(self, log_ns: np.ndarray, clock_s: np.ndarray, start_ns: int) -> None:
        self.log_ns, self.clock_s, self.start_ns = log_ns, clock_s, start_ns
        self.recorded = len(log_ns) > 0

    @classmethod
    def from_source(cls, source, store) -> Clock:
        """Read the /clock messages of a bag (rosbag2 source from replay.bagio)."""
        clocks = ClockLog()
        if "/clock" in source.topics and "/clock" not in source.unknown:
            for _, log_ns, raw in source.messages(["/clock"]):
                clocks.add(log_ns, store.deserialize_cdr(raw, source.topics["/clock"]))
        return clocks.clock(source.start_ns)

    @property
    def time_base(self) -> str:
        return "sim time (/clock)" if self.recorded else "bag receive time since start"

    def at(self, log_ns: int) -> float | None:
        if not self.recorded:
            return log_ns * 1e-9
        i = int(np.searchsorted(self.log_ns, log_ns, side="right")) - 1
        return float(self.clock_s[i]) if i >= 0 else None

    def log_of(self, clock: float) -> int:
        if not self.recorded:
            return round(clock * 1e9)
        return int(np.interp(clock, self.clock_s, self.log_ns.astype(np.float64)))

    def rel(self, clock: float) -> float:
        return (self.log_of(clock) - self.start_ns) * 1e-9

    def axis(self, log_ns: int) -> float:
        """A log time on the summaries' axis (see the module docstring); before the first
        /clock message: the first clock reading."""
        if not self.recorded:
            return (log_ns - self.start_ns) * 1e-9
        c = self.at(log_ns)
        return float(self.clock_s[0]) if c is None else c

    def axis_of_clock(self, clock: float) -> float:
        """A time on the nodes' clock (e.g. a header stamp) on the summaries' axis."""
        return clock if self.recorded else self.rel(clock)


class ClockLog:
    """/clock messages gathered during a pass over a bag (with its other small topics), then
    the Clock they give."""

    def __init__(self) -> None:
        self.log_ns: list[int] = []
        self.clock_s: list[float] = []

    def add(self, log_ns: int, msg) -> None:
        from qwen_vla_ros.ros.conversions import stamp_to_sec

        self.log_ns.append(log_ns)
        self.clock_s.append(stamp_to_sec(msg.clock))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.log_ns, np.int64), np.asarray(self.clock_s, np.float64)

    def clock(self, start_ns: int) -> Clock:
        return Clock(*self.arrays(), start_ns)
