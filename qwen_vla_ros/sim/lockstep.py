"""When a simulator may take its next step: on its wall timer alone, or in lockstep with the
commands that drive it.

A sim stepping on a wall timer races whatever commands it: on a loaded machine the command
path (leader -> adapter -> follower command) falls behind the sim's clock, so a
demonstration that succeeds on an idle machine fails on a busy one. In lockstep, while the
followers are being commanded, the sim steps only once every robot's command since its last
step has arrived; it waits at most ``timeout_s`` of wall time from that step, after which it
runs on its timer again (the commands stopped: HOLD, a fault) until commands come back. A
command in flight for the previous step counts for the next one, so the command path lags
the sim by a bounded number of steps instead of a growing one.

Tests and demonstration collection use it. A policy evaluation does not: a real robot does
not wait for a slow policy, and the adapter commands on every tick anyway.
"""

from __future__ import annotations

from collections.abc import Iterable


class Lockstep:
    def __init__(self, robots: Iterable[str], timeout_s: float) -> None:
        if timeout_s < 0:
            raise ValueError(f"lockstep timeout must be >= 0 s, got {timeout_s}")
        self.robots = frozenset(robots)
        self.timeout_s = timeout_s
        self.driven = False  # commands are arriving: step with them
        self.timeouts = 0  # times the commands stopped for timeout_s while driven
        self._commanded: set[str] = set()
        self._last_step: float | None = None

    def commanded(self, robot: str) -> None:
        """A command for ``robot`` arrived."""
        if robot in self.robots:
            self._commanded.add(robot)
            self.driven = True

    def may_step(self, wall: float) -> bool:
        """On each timer tick (``wall``: a monotonic time, s): True = step now."""
        if self.timeout_s > 0 and self.driven and not self._commanded >= self.robots:
            since = self._last_step if self._last_step is not None else wall
            if wall - since < self.timeout_s:
                return False
            self.driven = False
            self.timeouts += 1
        self._commanded.clear()
        self._last_step = wall
        return True
