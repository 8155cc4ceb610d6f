"""Fault supervision of a driving adapter, ROS-free.

An adapter drives the robot in TELEOP or POLICY only while its inputs keep coming. The
``Supervisor`` says when they stopped, and why, so the adapter falls back to HOLD and says so:

- POLICY: no valid chunk for ``policy_timeout`` seconds (default derived from the recent chunk
  period: ``period_factor`` x its 90th percentile, at least ``floor``, at most what one chunk
  covers, so a chunk is never left to run out unnoticed);
- TELEOP: no valid leader pose for ``teleop_timeout``;
- either: no valid measured pose for ``state_timeout``; the mode source (mode_manager) gone;
  the clock jumped back.

``AdapterStatus`` is what the adapter publishes (JSON on ``~/effective_mode``): the mode it
really is in, the one last asked of it, why it waits and why it refused or fell back, so
mode_manager can answer a switch truthfully and show a fault instead of a mode nobody drives.
Times are the node's clock (sim time under a simulator), seconds.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from qwen_vla_ros.params import at_least, one_of, param, positive, validate
from qwen_vla_ros.runtime.executor import BLEND_MODES
from qwen_vla_ros.runtime.modes import Mode


@dataclass(frozen=True)
class AdapterStatus:
    mode: Mode  # what the adapter does now
    requested: Mode  # what was last asked of it
    waiting: str = ""  # why the requested driving mode is not engaged yet
    fault: str = ""  # why it refused the request or fell back to HOLD
    stamp: float = 0.0
    refuses: str = ""  # why it would refuse a driving mode asked for now (e.g. start-up failed)

    def to_json(self) -> str:
        d = asdict(self)
        d["mode"], d["requested"] = self.mode.value, self.requested.value
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> AdapterStatus:
        """Parse; ValueError names what is wrong."""
        try:
            d = json.loads(text)
            return cls(Mode.parse(d["mode"]), Mode.parse(d["requested"]),
                       str(d.get("waiting", "")), str(d.get("fault", "")),
                       float(d.get("stamp", 0.0)), str(d.get("refuses", "")))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an adapter status: {text[:80]!r} ({exc})") from None

    @property
    def agrees(self) -> bool:
        """Doing what was asked."""
        return self.mode is self.requested

    def text(self) -> str:
        if self.fault:
            return f"{self.mode.value} ({self.fault})"
        if self.waiting:
            return f"{self.mode.value}, {self.requested.value} waits: {self.waiting}"
        return self.mode.value


class Watchdog:
    """When the last good input came (node clock)."""

    def __init__(self) -> None:
        self.last: float | None = None

    def feed(self, now: float) -> None:
        self.last = now

    def silent_for(self, now: float) -> float:
        return float("inf") if self.last is None else now - self.last


class ChunkPeriod:
    """Recent intervals between accepted chunks, for the derived policy timeout."""

    def __init__(self, window: int = 20) -> None:
        self.intervals: deque[float] = deque(maxlen=window)
        self.last: float | None = None

    def add(self, now: float) -> None:
        if self.last is not None and now > self.last:
            self.intervals.append(now - self.last)
        self.last = now

    def p90(self) -> float | None:
        return float(np.percentile(self.intervals, 90)) if len(self.intervals) >= 3 else None


@dataclass
class SupervisorConfig:
    policy_timeout: float = 0.0  # s; 0: derived from the chunk period
    teleop_timeout: float = 0.3  # s without a valid leader pose in TELEOP (after max_state_age)
    state_timeout: float = 0.3  # s without a valid measured pose while driving (same)
    engage_timeout: float = 3.0  # s a driving mode waits for a valid measured pose
    floor: float = 0.5  # s; the derived policy timeout is never shorter
    period_factor: float = 2.5
    first_chunk_timeout: float = 2.0  # s from engaging POLICY to the first chunk

    def __post_init__(self) -> None:
        for name in ("policy_timeout", "teleop_timeout", "state_timeout", "engage_timeout",
                     "floor", "first_chunk_timeout"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0 s, not {v}")


@dataclass
class AdapterParams:
    """Every chunk adapter's parameters (adapter_base declares them from this list; adapters
    with more subclass it)."""

    embodiment: str = param("vx300s_single", "embodiment name")
    blend: str = param("ensemble", "chunk execution: naive (newest chunk, no smoothing), "
                       "ensemble (ACT temporal ensembling) or rtc (newest chunk continuing the "
                       "committed prefix; policy rtc_prefix_steps != 0); docs/control.md",
                       check=one_of(*BLEND_MODES))
    ensemble_decay: float = param(0.01, "ensemble weight exp(-k i) per chunk age i (0: equal)",
                                  check=at_least(0.0))
    max_state_age: float = param(0.2, "s; older measured/leader pose -> no command",
                                 check=positive)
    ghost_lookahead_s: float = param(0.5, "s ahead of now shown on ~/predicted_joint_states",
                                     check=at_least(0.0))
    policy_timeout: float = param(
        SupervisorConfig.policy_timeout, "s without a valid chunk in POLICY -> HOLD; 0: 2.5 x "
        "the recent chunk period (p90), >= 0.5 s, <= one chunk's span", check=at_least(0.0))
    teleop_timeout: float = param(SupervisorConfig.teleop_timeout,
                                  "s without a valid leader pose in TELEOP -> HOLD",
                                  check=at_least(0.0))
    state_timeout: float = param(SupervisorConfig.state_timeout,
                                 "s without a valid measured pose while driving -> HOLD",
                                 check=at_least(0.0))
    engage_timeout: float = param(SupervisorConfig.engage_timeout,
                                  "s a driving mode waits for a valid measured pose before it "
                                  "is refused", check=at_least(0.0))

    def __post_init__(self) -> None:
        validate(self)

    def supervisor_config(self) -> SupervisorConfig:
        return SupervisorConfig(policy_timeout=self.policy_timeout,
                                teleop_timeout=self.teleop_timeout,
                                state_timeout=self.state_timeout,
                                engage_timeout=self.engage_timeout)


class Supervisor:
    """When the inputs of the engaged mode stopped; see the module docstring."""

    def __init__(self, cfg: SupervisorConfig, chunk_span: float) -> None:
        self.cfg, self.chunk_span = cfg, chunk_span
        self.chunks, self.leader, self.state = Watchdog(), Watchdog(), Watchdog()
        self.period = ChunkPeriod()
        self.engaged_at: float | None = None
        self.last_now: float | None = None

    def policy_timeout(self) -> float:
        if self.cfg.policy_timeout > 0:
            return self.cfg.policy_timeout
        p90 = self.period.p90()
        derived = self.chunk_span if p90 is None else self.cfg.period_factor * p90
        return float(min(max(derived, self.cfg.floor), max(self.chunk_span, self.cfg.floor)))

    def on_chunk(self, now: float) -> None:
        self.chunks.feed(now)
        self.period.add(now)

    def on_engaged(self, now: float) -> None:
        self.engaged_at = now

    def clock_jump(self, now: float) -> str | None:
        """A reason if the clock went backwards since the last call (then re-anchored)."""
        last, self.last_now = self.last_now, now
        if last is not None and now < last - 1e-6:
            self.engaged_at = None
            self.chunks, self.leader, self.state = Watchdog(), Watchdog(), Watchdog()
            self.period = ChunkPeriod()
            return f"clock jumped back from {last:.3f} s to {now:.3f} s"
        return None

    def check(self, mode: Mode, now: float) -> str | None:
        """Why the engaged ``mode`` must stop now, or None. Watchdogs count from the later of
        engaging and the last good input."""
        if mode is Mode.HOLD:
            return None
        since = self.engaged_at if self.engaged_at is not None else now

        def silent(w: Watchdog) -> float:
            return now - max(since, w.last if w.last is not None else -np.inf)

        if silent(self.state) > self.cfg.state_timeout:
            return f"measured joint states lost for {silent(self.state):.2f} s"
        if mode is Mode.POLICY:
            limit = self.policy_timeout()
            if self.chunks.last is None or self.chunks.last < since:  # none since engaging
                limit = max(limit, self.cfg.first_chunk_timeout)
            if silent(self.chunks) > limit:
                return f"policy lost: no valid chunk for {silent(self.chunks):.2f} s " \
                       f"(timeout {limit:.2f} s)"
        if mode is Mode.TELEOP and silent(self.leader) > self.cfg.teleop_timeout:
            return f"leader arms lost: no valid leader pose for {silent(self.leader):.2f} s"
        return None


class Agreement:
    """mode_manager's view of its adapters: did they do what was asked?"""

    def __init__(self, adapters: list[str]) -> None:
        self.adapters = list(adapters)
        self.statuses: dict[str, AdapterStatus] = {}

    def update(self, adapter: str, status: AdapterStatus) -> None:
        self.statuses[adapter] = status

    def verdict(self, mode: Mode) -> tuple[str, str]:
        """("agreed" | "refused" | "waiting", why) for the switch to ``mode``."""
        waiting = []
        for name in self.adapters:
            st = self.statuses.get(name)
            if st is None or st.requested is not mode:
                waiting.append(f"{name}: not told yet")
            elif st.fault and st.mode is not mode:
                return "refused", f"{name}: {st.fault}"
            elif st.mode is not mode:
                waiting.append(f"{name}: {st.waiting or 'not engaged yet'}")
        return ("waiting", "; ".join(waiting)) if waiting else ("agreed", "")

    def refusal(self, mode: Mode) -> str | None:
        """Why an adapter would refuse ``mode`` if asked now, or None (HOLD is never refused)."""
        if mode is Mode.HOLD:
            return None
        for name in self.adapters:
            st = self.statuses.get(name)
            if st is not None and st.refuses:
                return f"{name}: {st.refuses}"
        return None

    def fault_against(self, mode: Mode) -> str | None:
        """An adapter that fell back to HOLD from ``mode`` (asked for and lost), or None."""
        if mode is Mode.HOLD:
            return None
        for name in self.adapters:
            st = self.statuses.get(name)
            if st is not None and st.requested is mode and st.fault and st.mode is Mode.HOLD:
                return f"{name}: {st.fault}"
        return None
