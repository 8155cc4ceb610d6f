"""When a simulator may take its next step: on its wall timer alone, or in lockstep with the
commands that drive it.

A sim stepping on a wall timer races whatever commands it: on a loaded machine the command
path (leader -> adapter -> follower command) falls behind the sim's clock, so a
demonstration that succeeds on an idle machine fails on a busy one. In lockstep, while the
followers are being commanded, the sim steps only once every robot's command since its last
step has arrived; it waits at most ``timeout_s`` of wall time from that step, after which it
runs on its timer again (the commands stopped: HOLD, a fault) until commands come back. A
command in flight for the previous step counts for the next one, so the command path lags
the sim by a bounded number of steps instead of a growing one. A robot's commands may come as
several messages per step (ALOHA: the arm's group command and the gripper's single one); the
step waits for every kind that robot is known to send (``kinds`` given, and any other it has
sent), so it never falls between them.

Tests and demonstration collection use it. A policy evaluation on the wall clock does not (a
real robot does not wait for a slow policy); a paced one (``eval --paced``) does, with
``Pace`` below, so that the figures do not depend on the machine.

Both simulators (aloha_sim, base_sim) step through one ``SteppingGate``, from one list of
parameters (``PacedSimParams``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.params import at_least, param, validate
from qwen_vla_ros.runtime.pacing import TIME_EPS


class Lockstep:
    def __init__(self, robots: Iterable[str], timeout_s: float, kinds: Iterable[str] = ()
                 ) -> None:
        if timeout_s < 0:
            raise ValueError(f"lockstep timeout must be >= 0 s, got {timeout_s}")
        self.robots = frozenset(robots)
        self.timeout_s = timeout_s
        self.driven = False  # commands are arriving: step with them
        self.timeouts = 0  # times the commands stopped for timeout_s while driven
        # the kinds of command each robot sends per step: given, and learned as they come
        self._kinds: dict[str, set[str]] = {r: set(kinds) for r in self.robots}
        self._commanded: dict[str, set[str]] = {}  # kinds arrived since the last step
        self._last_step: float | None = None

    def commanded(self, robot: str, kind: str = "command") -> None:
        """A command for ``robot`` arrived (``kind``: which of its command messages)."""
        if robot in self.robots:
            self._kinds.setdefault(robot, set()).add(kind)
            self._commanded.setdefault(robot, set()).add(kind)
            self.driven = True

    def _complete(self) -> bool:
        return all(r in self._commanded and self._commanded[r] >= self._kinds.get(r, set())
                   for r in self.robots)

    def restart(self) -> None:
        """A new episode: nothing commands the robots yet, so step on the timer until
        commands come (the kinds each robot sends are remembered)."""
        self.driven = False
        self._commanded.clear()
        self._last_step = None

    def expect(self) -> None:
        """A driver takes over now: the next step is taken at once, each later one waits
        for its commands (a driver commands after each step, so it cannot command first)."""
        self.driven = True
        self._commanded = {r: set(self._kinds.get(r, set())) for r in self.robots}

    def may_step(self, wall: float) -> bool:
        """On each timer tick (``wall``: a monotonic time, s): True = step now."""
        if self.timeout_s > 0 and self.driven and not self._complete():
            since = self._last_step if self._last_step is not None else wall
            if wall - since < self.timeout_s:
                return False
            self.driven = False
            self.timeouts += 1
        self._commanded.clear()
        self._last_step = wall
        return True


class Pace:
    """When a paced simulator may step: only while its clock is before the time a policy
    granted (``grant``; ``runtime/pacing.Pacer`` on the policy's side), so a slow model
    never lets the world run on without it (a benchmark's delay is then exactly the one it
    injects, whatever the machine's load). Before any grant, or after ``release()``, the sim
    runs free; if no new grant comes for ``timeout_s`` of wall time while it waits, it runs
    free again (the policy stopped), counted in ``timeouts``, until the next grant.

    ``hold(now)`` (a new episode, sim/aloha_sim ``hold_after_reset_steps``) stops it at
    ``now`` until a policy grants from there on: a grant older than ``now`` (the previous
    episode's, still in flight) or "run free" (inf: a policy that was stopped) does not
    release it; the timeout does."""

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"pace timeout must be > 0 s, got {timeout_s}")
        self.timeout_s = timeout_s
        self.until = float("inf")
        self.timeouts = 0
        self.waited = 0  # ticks on which the sim did not step for lack of a grant
        self._granted_wall: float | None = None
        self.holding_at: float | None = None  # held for a new episode's first grant

    def grant(self, until: float, wall: float) -> None:
        """The policy lets the sim run until its clock reads ``until`` (s; inf: free)."""
        if self.holding_at is not None:
            if not (math.isfinite(until) and until >= self.holding_at - TIME_EPS):
                return  # from before the hold
            self.holding_at = None
        self.until = until
        self._granted_wall = wall

    def hold(self, now: float, wall: float) -> None:
        """Stop at ``now`` until a grant from ``now`` on (or the timeout, from ``wall``)."""
        self.until, self.holding_at, self._granted_wall = now, now, wall

    def release(self) -> None:
        self.until, self.holding_at = float("inf"), None

    def may_step(self, now: float, wall: float) -> bool:
        """True: take the step from sim time ``now`` (the first step at or past the grant is
        the last one taken)."""
        if now < self.until - TIME_EPS:
            return True
        if self._granted_wall is not None and wall - self._granted_wall >= self.timeout_s:
            self.until, self.holding_at = float("inf"), None
            self.timeouts += 1
            return True
        self.waited += 1
        return False


class EpisodeHold:
    """A held episode's start and end (aloha_sim ``hold_after_reset_steps``, paced
    evaluations). After a reset the sim takes ``steps`` steps on its timer (``settling``: no
    grant or command waited for), then waits for the paced policy's first grant
    (``waiting``; ``Pace.hold`` does the waiting); the first step after it is the driver's
    first of the episode (``granted``). Once the episode's last step is taken (``finish``)
    the sim takes no more, and reports the episode when that step's commands are in. An
    episode not begun by a reset (the first, in which the drivers start up) is not held, nor
    is any with ``steps`` 0."""

    def __init__(self, steps: int) -> None:
        if steps < 0:
            raise ValueError(f"hold steps must be >= 0, got {steps}")
        self.steps = steps
        self.active = False  # this episode is held
        self.settle_left = 0
        self.waiting = False
        self.last: Any = None  # the last step's outcome, once taken (held episodes)

    def start(self, reset: bool) -> None:
        self.active = reset and self.steps > 0
        self.settle_left = self.steps if self.active else 0
        self.waiting, self.last = False, None

    @property
    def settling(self) -> bool:
        return self.settle_left > 0

    def stepped(self) -> bool:
        """After each step; True when this step ends the settling (wait from here)."""
        if self.settle_left == 0:
            return False
        self.settle_left -= 1
        self.waiting = self.settle_left == 0
        return self.waiting

    def granted(self) -> bool:
        """Before a step the pace allowed: True once, for the first after the wait."""
        first, self.waiting = self.waiting, False
        return first

    def finish(self, outcome: Any) -> bool:
        """The episode's last step was taken; False if it is not held (report it now)."""
        if self.active:
            self.last = outcome
        return self.active

    @property
    def finished(self) -> bool:
        return self.active and self.last is not None


@dataclass
class PacedSimParams:
    """The stepping parameters aloha_sim and base_sim share (their parameter lists extend it)."""

    lockstep_timeout_s: float = param(
        0.0, "0: step on the wall timer. > 0: while the robots are commanded, step once each "
             "one's commands since the last step have arrived (aloha_sim: each arm's arm and "
             "gripper command; base_sim: cmd_vel), waiting up to this long "
             "(wall s; sim/lockstep.py): tests, demonstration collection and paced policy "
             "evaluations (eval --paced)", check=at_least(0.0))
    pace_timeout_s: float = param(
        0.0, "0: off. > 0: step only as far as a paced policy grants on /sim_pace "
             "(std_msgs/Float64, sim s; policy_node or navigation_node pace_sim), waiting up "
             "to this long (wall s) for a new grant before running free "
             "(sim/lockstep.Pace): benchmarks", check=at_least(0.0))
    hold_after_reset_steps: int = param(
        0, "with pace_timeout_s > 0: after each reset (base_sim: or restart; the first "
           "episode, which nothing began, runs free) take this many steps on the timer, "
           "then wait there for a paced policy's first grant, and (aloha_sim without "
           "auto_reset) stop at the episode's end "
           "(eval --paced: every episode begins from the same state at the same moment of "
           "the policy's schedule). 0: off", check=at_least(0))

    def __post_init__(self) -> None:
        validate(self)
        if self.hold_after_reset_steps and not self.pace_timeout_s > 0:
            raise ConfigError("hold_after_reset_steps needs pace_timeout_s > 0 (a paced sim)")


class SteppingGate:
    """Whether a simulator takes its next timer step: its ``Lockstep`` (off at timeout 0),
    ``Pace`` (with ``pace_timeout_s`` > 0) and ``EpisodeHold`` together, as both simulators
    step. ``held`` is set while an episode waits at its start for the policy's first grant
    (``held_at``: the sim time it waits at)."""

    def __init__(self, params: PacedSimParams, robots: Iterable[str],
                 kinds: Iterable[str] = ()) -> None:
        self.pace = Pace(params.pace_timeout_s) if params.pace_timeout_s > 0 else None
        self.lockstep = Lockstep(robots, params.lockstep_timeout_s, kinds)
        self.hold = EpisodeHold(params.hold_after_reset_steps)
        self.held = threading.Event()
        self.held_at: float | None = None

    def start_episode(self, reset: bool) -> None:
        """A new episode (``reset``: begun by a reset, so held when holding is on)."""
        self.lockstep.restart()
        self.hold.start(reset)
        self.held.clear()

    def may_step(self, now: float, wall: float, logger) -> bool:
        """Before a timer step from sim time ``now`` (``wall``: monotonic s): True = step.
        A pace or lockstep timeout is logged when it happens."""
        if self.pace is not None and not self.hold.settling:
            timeouts = self.pace.timeouts
            if not self.pace.may_step(now, wall):
                return False
            if self.pace.timeouts > timeouts:
                logger.warning(f"pace: no grant for {self.pace.timeout_s:g} s; running free "
                               "until the next one")
            if self.hold.granted():  # the policy's first grant: driven from now on
                self.held.clear()
                self.lockstep.expect()
        timeouts = self.lockstep.timeouts
        if not self.lockstep.may_step(wall):
            return False
        if self.lockstep.timeouts > timeouts:
            logger.info(f"lockstep: no command for {self.lockstep.timeout_s:g} s; stepping on "
                        "the timer until commands resume")
        return True

    def stepped(self, now: float, wall: float) -> None:
        """After a step to sim time ``now`` (its clock published): hold here if this step
        ends an episode's settling."""
        if self.hold.stepped():
            self.pace.hold(now, wall)
            self.held_at = now
            self.held.set()
