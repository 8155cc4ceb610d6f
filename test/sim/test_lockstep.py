"""Lockstep pacing of the sims (sim/lockstep.py), on explicit wall times."""

from __future__ import annotations

import pytest

from qwen_vla_ros.sim.lockstep import Lockstep

ARMS = ("follower_left", "follower_right")


def test_off_or_undriven_it_steps_on_every_tick():
    off = Lockstep(ARMS, 0.0)
    off.commanded("follower_left")
    assert all(off.may_step(t * 0.01) for t in range(5))
    idle = Lockstep(ARMS, 1.0)  # nothing commands the arms yet (start-up, HOLD)
    assert all(idle.may_step(t * 0.01) for t in range(5))


def test_driven_it_steps_once_per_command_of_every_arm():
    lock = Lockstep(ARMS, 1.0)
    lock.commanded("follower_left")
    lock.commanded("follower_right")
    assert lock.may_step(0.00)
    assert not lock.may_step(0.01)  # no command since that step: wait
    lock.commanded("follower_left")
    assert not lock.may_step(0.02)  # one arm is not enough
    lock.commanded("follower_right")
    lock.commanded("follower_right")
    assert lock.may_step(0.03)
    assert not lock.may_step(0.04)  # two commands of one arm are still one step
    lock.commanded("leader_left")  # not a robot it steps with
    assert not lock.may_step(0.05)
    assert lock.timeouts == 0


def test_when_commands_stop_it_waits_the_timeout_then_runs_on_the_timer():
    lock = Lockstep(ARMS, 0.5)
    for arm in ARMS:
        lock.commanded(arm)
    assert lock.may_step(10.0)
    assert not lock.may_step(10.1)
    assert not lock.may_step(10.49)
    assert lock.may_step(10.5)  # waited 0.5 s: the commands stopped
    assert lock.timeouts == 1 and not lock.driven
    assert lock.may_step(10.51) and lock.may_step(10.52)  # on the timer again
    lock.commanded("follower_left")  # commands come back: lockstep again
    assert lock.driven
    assert not lock.may_step(10.53)


def test_a_negative_timeout_is_refused():
    with pytest.raises(ValueError, match="lockstep timeout"):
        Lockstep(ARMS, -1.0)


def test_paced_it_steps_up_to_the_grant_then_waits_or_times_out():
    from qwen_vla_ros.sim.lockstep import Pace

    pace = Pace(timeout_s=2.0)
    assert pace.may_step(0.0, wall=0.0) and pace.may_step(5.0, wall=0.0)  # no grant: free
    pace.grant(0.1, wall=10.0)
    steps = [round(0.02 * k, 2) for k in range(8)]
    taken = [t for t in steps if pace.may_step(0.02 * steps.index(t), wall=10.5)]
    assert taken == [0.0, 0.02, 0.04, 0.06, 0.08]  # the step from 0.08 reaches 0.1: the last
    assert not pace.may_step(0.1, wall=11.9) and pace.waited >= 1
    assert pace.may_step(0.1, wall=12.0) and pace.timeouts == 1  # the policy went quiet
    assert pace.may_step(0.3, wall=12.0)  # free until the next grant
    pace.grant(0.3, wall=12.1)
    assert not pace.may_step(0.3, wall=12.2)
    pace.release()
    assert pace.may_step(0.3, wall=12.2)
    with pytest.raises(ValueError, match="pace timeout"):
        Pace(0.0)
