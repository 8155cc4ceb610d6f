"""Chunk execution at the control rate: what to command *now*, given the chunks received.

A chunk's action k is meant for time ``stamp + k * dt`` (stamp = the observation time the chunk
was computed from). At each control tick the executor:

1. finds the action(s) meant for now: steps whose time has passed are skipped (latency
   compensation); a chunk that no longer covers now is dropped; a chunk is run only at ticks
   after the clock reading it was sent at (``Chunk.sent``, from its tag), so a simulated
   tick and a chunk at the same reading do not race;
2. blends them (``mode``):
   - ``naive``: the newest chunk, switched to as soon as it arrives, no smoothing (what a
     client does that just executes the latest answer; the jump at a switch is only limited
     by the velocity clamp). A baseline, and for policies that change their plan on purpose;
   - ``ensemble``: ACT temporal ensembling over every chunk covering now, older chunks
     weighted exp(-m * i) (i = 0 the oldest). Smooth without any help from the model; it lags
     a new plan and averages plans that disagree;
   - ``rtc``: real-time chunking: the newest chunk, which the policy sampled continuing the
     committed prefix (the actions this schedule executes while the model thinks), so it
     joins the old plan without a jump and needs no fading. A chunk sampled without a prefix
     (the first one, or the policy's ``rtc_prefix_steps`` 0) is cross-faded in over
     ``blend_steps``. A chunk whose prefix is not what this schedule plans for those steps
     (the policy planned against chunks this executor never ran) is refused
     (``PrefixMismatch``) and the current plan continues;
3. clamps to joint position limits and to max_velocity * dt from the last command;
4. if no chunk covers now, HOLDS the last command (never extrapolates).

It returns the command actually sent and why (``trace``, when a list, records every one:
what ``execution_stats`` measures).

A chunk older than its horizon on arrival (its last action already due) is refused
(``StaleChunk``) and counted by the caller.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from qwen_vla_ros.runtime.limits import Limits
from qwen_vla_ros.runtime.pacing import TIME_EPS

BLEND_MODES = ("naive", "ensemble", "rtc")
PREFIX_TOLERANCE = 1e-6  # a continued prefix equals the planned actions (float64 on the wire)


@dataclass
class Chunk:
    actions: np.ndarray  # [H, D]
    stamp: float  # time of actions[0]
    dt: float
    prefix_len: int = 0  # how many leading actions were committed before sampling
    id: int | None = None  # the policy's chunk number (ChunkTag), None when untagged
    sent: float | None = None  # the policy's clock when it was published (ChunkTag.sent)

    def index_at(self, now: float) -> int:
        """Index of the action meant for ``now`` (rounded to the nearest step)."""
        return int(np.floor((now - self.stamp) / self.dt + 0.5))

    def covers(self, now: float) -> bool:
        k = self.index_at(now)
        return 0 <= k < len(self.actions)

    def runs_at(self, now: float) -> bool:
        """Whether a tick at clock ``now`` may execute it: only after the clock reading it
        was sent at. Live, a chunk always arrives after that; in a simulation the tick and
        the chunk can share one clock reading, and which came first would follow message
        timing (a paced evaluation would not repeat)."""
        return self.sent is None or now > self.sent + TIME_EPS

    @property
    def end(self) -> float:
        return self.stamp + (len(self.actions) - 1) * self.dt


@dataclass
class Command:
    position: np.ndarray
    source: str  # "chunk" | "hold"
    clamped: bool
    chunks_used: int
    newest: float | None = None  # stamp of the newest chunk in use (a change: a boundary)
    target: np.ndarray | None = None  # the blended plan before clamping


class RejectedChunk(ValueError):
    """A chunk the executor refuses (non-finite, wrong width, ...)."""


class StaleChunk(RejectedChunk):
    """A chunk whose every action is already due: it arrived later than its horizon."""


class PrefixMismatch(RejectedChunk):
    """An RTC chunk whose committed prefix differs from this schedule's plan."""


@dataclass(frozen=True)
class ChunkTag:
    """What a chunk says about itself on the wire (JointTrajectory ``header.frame_id``, a
    field trajectories leave empty): ``qvr_chunk id=12 prefix=4 delay=4 sent=12.340000000``:
    its number in the policy's sequence, how many leading actions continue the committed
    schedule, the delay in control steps the policy assumed when it chose that prefix, and
    the policy's clock (s) when it published the chunk (optional: adapters run a chunk only
    at ticks after it)."""

    id: int
    prefix: int
    delay: int
    sent: float | None = None

    KEY = "qvr_chunk"

    def text(self) -> str:
        sent = "" if self.sent is None else f" sent={self.sent:.9f}"
        return f"{self.KEY} id={self.id} prefix={self.prefix} delay={self.delay}{sent}"

    @classmethod
    def parse(cls, text: str) -> ChunkTag | None:
        """The tag in ``text``, None for an untagged chunk (any other frame_id); a malformed
        tag is a ValueError."""
        words = text.split()
        if not words or words[0] != cls.KEY:
            return None
        try:
            fields = dict(w.split("=", 1) for w in words[1:])
            sent = float(fields["sent"]) if "sent" in fields else None
            tag = cls(int(fields["id"]), int(fields["prefix"]), int(fields["delay"]), sent)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"malformed chunk tag {text!r}: {exc}") from None
        if tag.prefix < 0 or tag.delay < 0:
            raise ValueError(f"malformed chunk tag {text!r}: negative field")
        if tag.sent is not None and not math.isfinite(tag.sent):
            raise ValueError(f"malformed chunk tag {text!r}: sent is not finite")
        return tag


class ChunkExecutor:
    def __init__(self, limits: Limits, dt: float, mode: str = "ensemble",
                 ensemble_decay: float = 0.01, blend_steps: int = 5, max_chunks: int = 8) -> None:
        if mode not in BLEND_MODES:
            raise ValueError(f"blend mode '{mode}' not one of {BLEND_MODES}")
        if dt <= 0:
            raise ValueError("dt must be > 0")
        self.limits = limits
        self.dt = dt
        self.mode = mode
        self.decay = float(ensemble_decay)
        self.blend_steps = int(blend_steps)
        self.chunks: deque[Chunk] = deque(maxlen=max_chunks)
        self.last_command: np.ndarray | None = None
        self._fade_from: np.ndarray | None = None
        self._fade_left = 0
        self._fade_chunk: Chunk | None = None  # faded in from its first tick (rtc)
        self.dim = len(limits.lower)
        self.trace: list[tuple[float, Command]] | None = None  # a list: every step recorded

    # ---- inputs -------------------------------------------------------------------------
    def add_chunk(self, chunk: Chunk, now: float | None = None) -> None:
        """Schedule ``chunk``; ``now`` (the clock at arrival) refuses one already over."""
        a = np.asarray(chunk.actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.dim:
            raise RejectedChunk(f"chunk shape {a.shape}, expected [H, {self.dim}]")
        if len(a) == 0:
            raise RejectedChunk("empty chunk")
        if not np.all(np.isfinite(a)):
            raise RejectedChunk("chunk contains NaN or inf")
        if not (np.isfinite(chunk.stamp) and chunk.dt > 0):
            raise RejectedChunk(f"chunk stamp {chunk.stamp} / dt {chunk.dt} invalid")
        if self.chunks and chunk.stamp < self.chunks[-1].stamp:
            raise RejectedChunk(f"chunk stamp {chunk.stamp:.3f} older than the newest "
                                f"({self.chunks[-1].stamp:.3f})")
        new = Chunk(a, float(chunk.stamp), float(chunk.dt), int(chunk.prefix_len), chunk.id,
                    chunk.sent)
        if now is not None and new.index_at(now) >= len(a):
            raise StaleChunk(f"chunk {chunk.id} from {chunk.stamp:.3f} arrived at {now:.3f}, "
                             f"after its last action ({new.end:.3f})")
        continues = False
        if self.mode == "rtc" and new.prefix_len > 0:
            # Compared where this schedule has a plan (none at all: the first chunk after a
            # reset, which is faded in).
            plan = [(self._newest_at(new.stamp + k * self.dt), a[k])
                    for k in range(min(new.prefix_len, len(a)))]
            errs = [float(np.abs(p - q).max()) for p, q in plan if p is not None]
            if errs and max(errs) > PREFIX_TOLERANCE:
                raise PrefixMismatch(
                    f"chunk {chunk.id}: its {new.prefix_len}-step prefix differs from the "
                    f"plan by up to {max(errs):.3g} (the policy planned against chunks this "
                    "adapter did not run); the current plan continues")
            continues = bool(errs)
        if self.mode == "rtc" and not continues and self.last_command is not None:
            self._fade_chunk = new
        self.chunks.append(new)

    def reset(self, position: np.ndarray | None = None) -> None:
        """Forget all chunks; hold ``position`` (e.g. the measured pose at a handover)."""
        self.chunks.clear()
        self._fade_left, self._fade_chunk = 0, None
        self.last_command = None if position is None else np.asarray(position, float).copy()

    def set_last_command(self, position: np.ndarray) -> None:
        """Tell the executor what the robot was last commanded by someone else (teleop)."""
        self.last_command = np.asarray(position, dtype=np.float64).copy()

    # ---- schedule -----------------------------------------------------------------------
    def _prune(self, now: float) -> None:
        while self.chunks and self.chunks[0].index_at(now) >= len(self.chunks[0].actions):
            self.chunks.popleft()

    def planned(self, now: float) -> tuple[np.ndarray | None, int]:
        """The blended (unclamped) action for ``now`` and how many chunks contributed.

        Read-only: may be asked about the future (ghost display) without dropping chunks."""
        target, used, _ = self._plan(now)
        return target, used

    def _plan(self, now: float) -> tuple[np.ndarray | None, int, float | None]:
        """``planned`` and the stamp of the newest chunk covering ``now``."""
        covering = [c for c in self.chunks if c.covers(now) and c.runs_at(now)]
        if not covering:
            return None, 0, None
        newest = covering[-1]
        if self.mode == "naive":
            return newest.actions[newest.index_at(now)], 1, newest.stamp
        if self.mode == "rtc":
            target = newest.actions[newest.index_at(now)]
            if self._fade_left > 0 and self._fade_from is not None:
                w = self._fade_left / (self.blend_steps + 1)
                target = w * self._fade_from + (1 - w) * target
            return target, 1, newest.stamp
        # ACT temporal ensembling: oldest first, w_i = exp(-m * i).
        weights = np.exp(-self.decay * np.arange(len(covering)))
        weights /= weights.sum()
        stacked = np.stack([c.actions[c.index_at(now)] for c in covering])
        return weights @ stacked, len(covering), newest.stamp

    def committed(self, start: float, count: int) -> np.ndarray | None:
        """Actions already planned for ``start + k*dt``, k < count (prefix for RTC sampling).

        None if the current schedule does not cover all of them."""
        out = self.plan_ahead(start, count)
        return out if 0 < count == len(out) else None

    def plan_ahead(self, start: float, count: int) -> np.ndarray:
        """Up to ``count`` actions planned for ``start + k*dt``, k = 0, 1, ..., stopping at the
        first step no chunk covers ([0, action_dim] if none: the soft-guidance target)."""
        out = []
        for k in range(count):
            a = self._newest_at(start + k * self.dt)
            if a is None:
                break
            out.append(a)
        return np.stack(out) if out else np.zeros((0, self.limits.lower.shape[0]))

    def _newest_at(self, t: float) -> np.ndarray | None:
        """The newest chunk's action for time ``t`` (the rtc and naive schedule), or None."""
        for c in reversed(self.chunks):
            if c.covers(t):
                return c.actions[c.index_at(t)]
        return None

    # ---- control tick -------------------------------------------------------------------
    def step(self, now: float) -> Command | None:
        """The command for this tick, or None while no pose is known.

        Without a known pose (``reset(measured)`` or ``set_last_command``) there is nothing to
        limit the first step against, so no chunk is executed: the caller must hold."""
        if self.last_command is None:
            return None
        self._prune(now)
        if self._fade_chunk is not None and self._fade_chunk.runs_at(now):
            # the fade starts where the commands are when the new chunk first runs
            self._fade_from, self._fade_left = self.last_command.copy(), self.blend_steps
            self._fade_chunk = None
        target, used, newest = self._plan(now)
        if target is None:
            out = Command(self.last_command.copy(), "hold", False, 0)
        else:
            if self._fade_left > 0:
                self._fade_left -= 1
            cmd, clamped = self.limits.clamp(target, self.last_command, self.dt)
            self.last_command = cmd
            out = Command(cmd.copy(), "chunk", clamped, used, newest, np.array(target))
        if self.trace is not None:
            self.trace.append((now, out))
        return out


def execution_stats(trace: list[tuple[float, Command]], step_limit: np.ndarray,
                    dt: float) -> dict[str, float | int | None]:
    """How smooth a run of ``step`` calls was (``ChunkExecutor.trace``): at chunk boundaries
    (a tick whose newest chunk changed), the step the plan asked for, from the previous tick's
    target to this one's, before clamping, in units of the per-step limit ``step_limit``
    (max_velocity * dt; the largest ratio over the dimensions), max and p99: above 1 the
    switch asked for more than the robot may move in a step. Target to target, because a
    plan faster than the limit leaves the clamped commands lagging, and that lag is not the
    switch's doing. For scale, the same step inside chunks (``inner_step_*``: what the plans
    ask between their own steps) and the dimension of each largest step (``*_dim``). Also the
    RMS of the jerk of the commands sent (third difference / dt^3, per dimension, over runs of
    commands from chunks); seconds spent holding for lack of a chunk after the first one."""
    # (largest ratio, its dimension) per tick: at boundaries, and inside chunks
    jumps: list[tuple[float, int]] = []
    inner: list[tuple[float, int]] = []
    jerks, hold = [], 0
    started = False
    run: list[np.ndarray] = []
    for (_, a), (_, b) in itertools.pairwise(trace):
        if b.source == "chunk":
            started = True
            if a.source == "chunk" and a.newest is not None:
                asked = b.target if b.target is not None else b.position
                # target to target: what the plan asks, not the clamp's lag behind it
                came = a.target if a.target is not None else a.position
                ratio = np.abs(asked - came) / step_limit
                (jumps if b.newest != a.newest else inner).append(
                    (float(ratio.max()), int(ratio.argmax())))
        elif started:
            hold += 1
    for _, c in trace:  # jerk over uninterrupted runs of chunk commands
        if c.source == "chunk":
            run.append(c.position)
            continue
        if len(run) >= 4:
            jerks.append(np.diff(np.array(run), n=3, axis=0) / dt**3)
        run = []
    if len(run) >= 4:
        jerks.append(np.diff(np.array(run), n=3, axis=0) / dt**3)
    j = np.concatenate(jerks) if jerks else np.zeros((0, len(step_limit)))
    def spread(steps: list[tuple[float, int]]) -> tuple[float | None, float | None, int | None]:
        """Largest ratio, p99 of the ratios, and the dimension of the (first) largest."""
        if not steps:
            return None, None, None
        top = max(steps, key=lambda s: s[0])
        return top[0], float(np.percentile([r for r, _ in steps], 99)), top[1]

    jump_max, jump_p99, jump_dim = spread(jumps)
    inner_max, inner_p99, inner_dim = spread(inner)
    return {"boundaries": len(jumps),
            "boundary_jump_max": jump_max,
            "boundary_jump_p99": jump_p99,
            "boundary_jump_dim": jump_dim,
            "inner_steps": len(inner),
            "inner_step_max": inner_max,
            "inner_step_p99": inner_p99,
            "inner_step_dim": inner_dim,
            "jerk_rms": float(np.sqrt((j ** 2).mean())) if j.size else None,
            "hold_s": hold * dt}
