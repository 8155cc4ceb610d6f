"""Supervisor (when a driving mode's inputs stopped) and Agreement (mode_manager's view of its
adapters), on a clock the test controls."""

from __future__ import annotations

import pytest

from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.supervision import (
    AdapterStatus,
    Agreement,
    Supervisor,
    SupervisorConfig,
)


def engaged(mode: Mode, t0: float = 10.0, **cfg) -> Supervisor:
    sup = Supervisor(SupervisorConfig(**cfg), chunk_span=1.0)
    sup.clock_jump(t0)
    sup.on_engaged(t0)
    return sup


def feed_all(sup: Supervisor, now: float) -> None:
    sup.state.feed(now)
    sup.leader.feed(now)


def test_policy_timeout_derived_from_chunk_period_within_floor_and_span():
    sup = engaged(Mode.POLICY)
    assert sup.policy_timeout() == 1.0  # no period measured yet: one chunk's span
    for k in range(10):
        sup.on_chunk(10.0 + 0.2 * k)
    assert sup.policy_timeout() == pytest.approx(0.5)  # 2.5 x 0.2 s
    fast = engaged(Mode.POLICY)
    for k in range(10):
        fast.on_chunk(10.0 + 0.02 * k)
    assert fast.policy_timeout() == 0.5  # the floor
    slow = engaged(Mode.POLICY)
    for k in range(10):
        slow.on_chunk(10.0 + 2.0 * k)
    assert slow.policy_timeout() == 1.0  # never beyond what a chunk covers
    assert engaged(Mode.POLICY, policy_timeout=0.3).policy_timeout() == 0.3


def test_policy_lost_after_the_timeout_not_before():
    sup = engaged(Mode.POLICY)
    for k in range(6):
        t = 10.0 + 0.2 * k
        sup.on_chunk(t)
        feed_all(sup, t)
        assert sup.check(Mode.POLICY, t) is None
    last = 11.0
    feed_all(sup, last + 0.49)
    assert sup.check(Mode.POLICY, last + 0.49) is None
    feed_all(sup, last + 0.51)
    reason = sup.check(Mode.POLICY, last + 0.51)
    assert reason and reason.startswith("policy lost")


def test_first_chunk_gets_its_own_grace_then_the_policy_timeout():
    sup = engaged(Mode.POLICY, first_chunk_timeout=2.0)
    feed_all(sup, 11.9)
    assert sup.check(Mode.POLICY, 11.9) is None  # model warming up: allowed 2 s
    feed_all(sup, 12.1)
    assert "policy lost" in sup.check(Mode.POLICY, 12.1)
    # A chunk received before engaging does not count as the first one.
    sup = Supervisor(SupervisorConfig(), chunk_span=1.0)
    sup.on_chunk(9.9)
    sup.on_engaged(10.0)
    feed_all(sup, 11.5)
    assert sup.check(Mode.POLICY, 11.5) is None


def test_teleop_leader_and_measured_pose_watchdogs():
    sup = engaged(Mode.TELEOP)
    feed_all(sup, 10.3)
    sup.state.feed(10.9)
    assert "leader arms lost" in sup.check(Mode.TELEOP, 10.9)
    assert sup.check(Mode.POLICY, 10.9) is None  # POLICY needs no leader
    sup = engaged(Mode.TELEOP)
    sup.leader.feed(10.9)
    assert "measured joint states lost" in sup.check(Mode.TELEOP, 10.9)
    assert sup.check(Mode.HOLD, 100.0) is None  # HOLD needs nothing


def test_clock_jump_back_is_reported_once_and_re_anchors():
    sup = engaged(Mode.POLICY)
    assert sup.clock_jump(10.5) is None
    reason = sup.clock_jump(3.0)
    assert reason and "jumped back" in reason
    assert sup.clock_jump(3.02) is None


def test_config_rejects_negative_or_non_finite():
    with pytest.raises(ValueError, match="teleop_timeout"):
        SupervisorConfig(teleop_timeout=-1)
    with pytest.raises(ValueError, match="policy_timeout"):
        SupervisorConfig(policy_timeout=float("nan"))


def test_status_round_trips_and_rejects_garbage():
    st = AdapterStatus(Mode.HOLD, Mode.POLICY, fault="POLICY -> HOLD: policy lost", stamp=3.5)
    assert AdapterStatus.from_json(st.to_json()) == st
    assert not st.agrees and "policy lost" in st.text()
    for bad in ("", "{}", '{"mode": "FLY", "requested": "HOLD"}', "[1]"):
        with pytest.raises(ValueError):
            AdapterStatus.from_json(bad)


def test_agreement_verdicts():
    ag = Agreement(["a", "b"])
    assert ag.verdict(Mode.POLICY) == ("waiting", "a: not told yet; b: not told yet")
    ag.update("a", AdapterStatus(Mode.POLICY, Mode.POLICY))
    ag.update("b", AdapterStatus(Mode.HOLD, Mode.POLICY, waiting="start-up MOVING"))
    verdict, why = ag.verdict(Mode.POLICY)
    assert verdict == "waiting" and "start-up MOVING" in why
    ag.update("b", AdapterStatus(Mode.POLICY, Mode.POLICY))
    assert ag.verdict(Mode.POLICY) == ("agreed", "")
    assert ag.fault_against(Mode.POLICY) is None
    ag.update("b", AdapterStatus(Mode.HOLD, Mode.POLICY, fault="POLICY -> HOLD: policy lost"))
    assert ag.verdict(Mode.POLICY)[0] == "refused"
    assert ag.fault_against(Mode.POLICY) == "b: POLICY -> HOLD: policy lost"
    assert ag.fault_against(Mode.TELEOP) is None  # a fault from another request is old news
