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


def test_a_step_waits_for_every_kind_of_command_a_robot_sends():
    """ALOHA's adapter sends each follower an arm (group) and a gripper (single) command per
    tick: a step between the two would apply the gripper's a step late, as timing falls."""
    lock = Lockstep(ARMS, 1.0, kinds=("group", "single"))
    for arm in ARMS:
        lock.commanded(arm, "group")
    assert not lock.may_step(0.00)  # the grippers' commands are still on their way
    for arm in ARMS:
        lock.commanded(arm, "single")
    assert lock.may_step(0.01)
    learned = Lockstep(ARMS, 1.0)  # kinds not given: learned as they come
    for arm in ARMS:
        learned.commanded(arm, "group")
        learned.commanded(arm, "single")
    assert learned.may_step(0.0)
    for arm in ARMS:
        learned.commanded(arm, "group")
    assert not learned.may_step(0.01)


def test_restart_steps_on_the_timer_and_expect_takes_one_step_then_waits():
    lock = Lockstep(ARMS, 1.0, kinds=("group",))
    for arm in ARMS:
        lock.commanded(arm, "group")
    assert lock.may_step(0.0) and not lock.may_step(0.01)
    lock.restart()  # a new episode, nothing commanded: the timer
    assert lock.may_step(0.02) and lock.may_step(0.03)
    lock.expect()  # a driver engaged: this step at once, then one per command
    assert lock.may_step(0.04) and not lock.may_step(0.05)
    for arm in ARMS:
        lock.commanded(arm, "group")
    assert lock.may_step(0.06) and lock.timeouts == 0


def test_a_held_pace_waits_for_a_fresh_grant():
    """An episode's start (aloha_sim ``hold_after_reset_steps``): grants still in flight
    from before the hold, and "run free" from a stopped policy, do not release it; the
    policy's first grant from the held time on does, and the timeout counts from the hold."""
    from qwen_vla_ros.sim.lockstep import Pace

    pace = Pace(timeout_s=2.0)
    pace.grant(5.0, wall=0.0)
    pace.hold(3.0, wall=1.0)
    assert not pace.may_step(3.0, wall=1.1)
    pace.grant(2.9, wall=1.2)  # the previous episode's
    pace.grant(float("inf"), wall=1.2)  # a policy deactivated
    assert not pace.may_step(3.0, wall=1.3) and pace.holding_at == 3.0
    pace.grant(3.0, wall=1.4)  # requested at the held time: still held while it works
    assert pace.holding_at is None and not pace.may_step(3.0, wall=1.5)
    pace.grant(3.1, wall=1.6)
    assert pace.may_step(3.0, wall=1.6) and not pace.may_step(3.1, wall=1.7)
    pace.hold(4.0, wall=10.0)
    assert not pace.may_step(4.0, wall=11.9)
    assert pace.may_step(4.0, wall=12.0) and pace.timeouts == 1 and pace.holding_at is None


def test_a_held_episode_settles_waits_for_its_first_grant_and_stops_at_its_end():
    from qwen_vla_ros.sim.lockstep import EpisodeHold

    hold = EpisodeHold(3)
    hold.start(reset=False)  # the first episode: the drivers start up in it, never held
    assert not hold.settling and not hold.stepped() and not hold.finish("end")
    assert not hold.finished
    hold.start(reset=True)
    took = []
    while hold.settling:
        took.append(hold.stepped())
    assert took == [False, False, True] and hold.waiting  # the third step begins the wait
    assert not hold.stepped()  # later steps change nothing
    assert hold.granted() and not hold.granted()  # the first step after the wait, once
    assert hold.finish("outcome") and hold.finished and hold.last == "outcome"
    hold.start(reset=True)
    assert hold.settling and not hold.finished  # a new episode
    off = EpisodeHold(0)
    off.start(reset=True)
    assert not off.settling and not off.finish("x")
    with pytest.raises(ValueError, match="hold steps"):
        EpisodeHold(-1)
