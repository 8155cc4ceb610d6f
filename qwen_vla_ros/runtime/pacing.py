"""A paced policy: the sim waits for the model, and each chunk comes out exactly a chosen
delay of sim time after its request (policy_node ``pace_sim``; the sim's side is
``sim/lockstep.Pace``).

Closed-loop evaluations on the wall clock mix the method with the machine: the same weights
and seeds read 23/40 and 20/40 in two sessions, and a delay benchmark's delay is the model's
time on that machine plus the one injected. Paced, the model's own time does not count: the
policy requests a chunk at sim time t (the sim held there by its grant), the grant then moves
on to t + delay, and the chunk is published when the sim's clock reaches it; the next request
is at the later of then and t + period (the policy's ``inference_rate_hz``). A rejected
request (stale inputs) is tried again one period later. Every change is a new grant the node
publishes, so the sim always knows how far it may run.

With the sim held at each episode's start (aloha_sim ``hold_after_reset_steps``) and a new
Pacer at each activation, an evaluation's episodes repeat exactly (docs/control.md, "Paced
simulation").
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Sim times closer than this count as equal (sums of the sim's step never land exactly).
TIME_EPS = 1e-6
# The grants' topic (std_msgs/Float64: sim s the simulator may run to; inf: free).
PACE_TOPIC = "/sim_pace"


@dataclass
class Due:
    """What the node must do now: ``request`` a chunk, or ``publish`` the finished one."""

    request: bool = False
    publish: tuple[Any, Any] | None = None  # (request, chunk) to publish


class Pacer:
    def __init__(self, delay_s: float, period_s: float) -> None:
        if delay_s < 0 or not period_s > 0:
            raise ValueError(f"pacing needs delay >= 0 and period > 0 s, got {delay_s}, "
                             f"{period_s}")
        self.delay_s, self.period_s = delay_s, period_s
        self._lock = threading.Lock()
        self.next_request = -math.inf  # sim time of the next request
        self.requested_at: float | None = None  # a request in flight, or its chunk pending
        self._done: tuple[Any, Any] | None = None  # (request, chunk) waiting for its time
        self.grant = -math.inf  # how far the sim may run (published by the node)

    def _grant(self) -> float:
        if self.requested_at is None:
            return self.next_request
        if self._done is None:
            return self.requested_at  # hold while the model works
        return self.requested_at + self.delay_s

    def tick(self, now: float, ready: Callable[[], bool] = lambda: True) -> Due:
        """The sim's clock reads ``now``: what is due. A request is due only once
        ``ready()`` (the inputs the sim published for ``now`` have all arrived); until then the
        sim stays held and the node ticks again as they come. Read ``grant`` afterwards."""
        with self._lock:
            due = Due()
            if self._done is not None and now >= self.requested_at + self.delay_s - TIME_EPS:
                due.publish = self._done
                self.next_request = max(now, self.requested_at + self.period_s)
                self.requested_at, self._done = None, None
            if self.requested_at is None and now >= self.next_request - TIME_EPS \
                    and ready():
                due.request = True
                self.requested_at = now
            self.grant = self._grant()
            return due

    def finished(self, request: Any, chunk: Any) -> None:
        """The model's chunk for the request in flight; ``tick`` publishes it when due."""
        with self._lock:
            if self.requested_at is not None:
                self._done = (request, chunk)
                self.grant = self._grant()

    def failed(self, now: float) -> None:
        """The request was rejected or inference failed: try again one period later."""
        with self._lock:
            start = self.requested_at if self.requested_at is not None else now
            self.requested_at, self._done = None, None
            self.next_request = start + self.period_s
            self.grant = self._grant()


class StepSchedule:
    """A rate on a stepped clock (a paced navigation_node's follower on the sim's steps):
    ``due(now)`` is True at the first reading at or past each period, counted from the first
    reading or from ``restart(now)``; a reading that falls behind by a whole period starts the
    count again from it."""

    def __init__(self, period_s: float) -> None:
        if not period_s > 0:
            raise ValueError(f"a schedule needs a period > 0 s, got {period_s}")
        self.period_s = period_s
        self.next = -math.inf

    def restart(self, now: float) -> None:
        self.next = now

    def due(self, now: float) -> bool:
        if now < self.next - TIME_EPS:
            return False
        self.next += self.period_s
        if self.next <= now + TIME_EPS:
            self.next = now + self.period_s
        return True
