"""Run the policy off the control thread: one request in flight, newest observation wins.

ROS-free: the policy node submits observations from its timer and gets results through a
callback on the worker thread. A slow model never blocks the caller; while it runs, newer
submissions replace older waiting ones (an old observation is useless once a newer exists).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class LatencyStats:
    window: int = 200

    def __post_init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=self.window)

    def add(self, ms: float) -> None:
        self.samples.append(ms)

    def percentile(self, q: float) -> float | None:
        if not self.samples:
            return None
        data = sorted(self.samples)
        k = min(len(data) - 1, max(0, round(q / 100 * (len(data) - 1))))
        return data[k]


class DelayEstimator:
    """How many control steps pass between an observation and the first moment its chunk can
    be executed, from measurements (observation stamp to publication, seconds): the
    ``quantile`` of the last ``window``, rounded up to whole steps, plus ``MARGIN`` steps (the
    adapter acts at its next control tick, and picks the action nearest in time), clamped to
    [1, ``horizon`` - 1]; 0 until the first measurement. This is the prefix real-time chunking
    must commit: the steps that run while the model thinks.

    A longer delay is taken at once (a prefix shorter than the delay leaves steps that run
    before the chunk arrives uncommitted); a shorter one only after ``patience`` measurements
    in a row all ask for less (then the largest of them), so a latency on the edge of a step
    does not flip the prefix, and the log, at every chunk."""

    MARGIN = 2

    def __init__(self, dt: float, horizon: int, window: int = 20, quantile: float = 90.0,
                 patience: int = 10):
        if dt <= 0 or horizon < 2 or patience < 1:
            raise ValueError(f"need dt > 0, horizon >= 2 and patience >= 1, got {dt}, "
                             f"{horizon}, {patience}")
        self.dt, self.horizon, self.quantile = float(dt), int(horizon), float(quantile)
        self.samples = LatencyStats(window)
        self.patience = int(patience)
        self.steps = 0
        self._lower: list[int] = []  # consecutive estimates below ``steps``

    def add(self, seconds: float) -> bool:
        """Record one delay; returns whether ``steps`` changed."""
        if not seconds >= 0:  # NaN or a clock that went back: not a measurement
            return False
        self.samples.add(float(seconds))
        high = self.samples.percentile(self.quantile)
        steps = min(self.horizon - 1,
                    max(1, math.ceil(high / self.dt - 1e-9) + self.MARGIN))
        if steps >= self.steps:
            self._lower.clear()
            changed, self.steps = steps != self.steps, steps
            return changed
        self._lower.append(steps)
        if len(self._lower) < self.patience:
            return False
        self.steps = max(self._lower)
        self._lower.clear()
        return True


class InferenceWorker:
    def __init__(self, run: Callable[[Any], Any], on_result: Callable[[Any, Any], None],
                 on_error: Callable[[Any, BaseException], None]) -> None:
        self._run = run
        self._on_result = on_result
        self._on_error = on_error
        self._pending: Any = None
        self._cv = threading.Condition()
        self._stop = False
        self.busy = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="policy-inference", daemon=True)
        self._thread.start()

    def submit(self, request: Any) -> None:
        with self._cv:
            if self._pending is not None:
                self.dropped += 1
            self._pending = request
            self._cv.notify()

    @property
    def running(self) -> bool:
        """False once ``stop`` was asked: a long ``run`` may end early."""
        return not self._stop

    def idle(self) -> bool:
        with self._cv:
            return not self.busy and self._pending is None

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                request, self._pending = self._pending, None
                self.busy = True
            try:
                result = self._run(request)
            except BaseException as exc:
                self._on_error(request, exc)
            else:
                self._on_result(request, result)
            finally:
                with self._cv:
                    self.busy = False

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout)
