"""The policy's side of a paced simulation (runtime/pacing.py), against a simulated clock
that steps only as far as the grant, with the model finishing at random moments."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qwen_vla_ros.runtime.pacing import Pacer

DT = 0.02


def test_a_chunk_comes_out_exactly_its_delay_after_its_request():
    pacer = Pacer(delay_s=0.1, period_s=0.2)
    due = pacer.tick(0.0)
    assert due.request and due.publish is None and pacer.grant == 0.0  # held while it works
    pacer.finished("req", "chunk")
    assert pacer.grant == pytest.approx(0.1)  # the sim may run on to the publication time
    assert pacer.tick(0.08).publish is None
    due = pacer.tick(0.1)
    assert due.publish == ("req", "chunk") and not due.request
    assert pacer.grant == pytest.approx(0.2)  # the next request, one period after the last
    assert pacer.tick(0.2).request


def test_without_delay_it_publishes_at_the_request_and_longer_delays_chain():
    now_pacer = Pacer(delay_s=0.0, period_s=0.2)
    now_pacer.tick(0.4)
    now_pacer.finished("r", "c")
    assert now_pacer.tick(0.4).publish == ("r", "c") and now_pacer.grant == pytest.approx(0.6)
    slow = Pacer(delay_s=0.3, period_s=0.2)
    slow.tick(0.0)
    slow.finished("r", "c")
    due = slow.tick(0.3)
    assert due.publish == ("r", "c") and due.request  # back to back, as a slow model runs


def test_a_rejected_request_is_tried_again_a_period_later():
    pacer = Pacer(delay_s=0.1, period_s=0.2)
    pacer.tick(1.0)
    pacer.failed(1.0)
    assert pacer.grant == pytest.approx(1.2) and not pacer.tick(1.1).request
    assert pacer.tick(1.2).request
    pacer.finished("late", "chunk")  # a result after a failure is not published twice
    pacer.failed(1.2)
    assert pacer.tick(1.3).publish is None
    with pytest.raises(ValueError):
        Pacer(delay_s=-0.1, period_s=0.2)


@pytest.mark.parametrize("seed", range(5))
def test_the_clock_never_passes_a_chunk_it_waits_for(seed):
    """A sim that steps while its clock is before the grant, and a model that finishes
    after a random number of the sim's idle turns: every chunk is published at the first
    step at or after request + delay, requests are a period apart at least, and the clock
    never runs more than one step past a grant."""
    rng = np.random.default_rng(seed)
    delay, period = float(rng.choice([0.0, 0.05, 0.1, 0.2, 0.3])), 0.1
    pacer = Pacer(delay, period)
    now, working, published, requests = 0.0, None, [], []
    for _ in range(3000):
        due = pacer.tick(now)
        if due.publish is not None:
            published.append((due.publish[0], now))
        if due.request:
            requests.append(now)
            working = (now, int(rng.integers(0, 6)))  # idle turns until the model is done
        if working is not None:
            started, turns = working
            if turns == 0:
                pacer.finished(started, "chunk")
                working = None
                continue  # the node ticks again with the same clock
            working = (started, turns - 1)
        if now < pacer.grant - 1e-6:
            now = round(now + DT, 6)  # the sim's step
            assert now < pacer.grant + DT
    assert len(published) > 10
    for asked, at in published:
        assert asked + delay - 1e-6 <= at < asked + delay + DT
    assert all(b - a >= period - 1e-6 for a, b in itertools.pairwise(requests))


def test_a_request_waits_until_its_inputs_are_in():
    pacer = Pacer(delay_s=0.0, period_s=0.2)
    assert not pacer.tick(0.0, ready=lambda: False).request
    assert pacer.grant <= 0.0  # the sim stays held until they come
    assert pacer.tick(0.0, ready=lambda: True).request


def test_a_step_schedule_ticks_at_the_first_step_past_each_period():
    """20 Hz on a 50 Hz clock: ticks 2 or 3 steps apart, 20 per second, the same from any
    start; a restart counts from there; a gap of a whole period starts the count again."""
    from qwen_vla_ros.runtime.pacing import StepSchedule

    def ticks(start: float, n: int, schedule: StepSchedule) -> list[int]:
        return [k for k in range(n) if schedule.due(start + k * DT)]

    a = ticks(0.0, 51, StepSchedule(0.05))
    assert a == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25, 28, 30, 33, 35, 38, 40, 43, 45, 48,
                 50]
    late = StepSchedule(0.05)
    assert ticks(1234.56, 51, late) == a  # an absolute clock of another run: the same steps
    late.restart(2000.0)
    assert not late.due(1999.98) and late.due(2000.0) and not late.due(2000.02)
    assert late.due(2003.0) and late.next == pytest.approx(2003.05)  # behind: counted anew
    with pytest.raises(ValueError, match="period > 0"):
        StepSchedule(0.0)
