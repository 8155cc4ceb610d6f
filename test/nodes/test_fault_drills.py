"""Fault drills (qwen_vla_ros/drills.py) against the sim stack as separate processes: every
fault is detected within its bound (sim time, the nodes' clock), the arms hold (no command
outside the limits, no motion after detection), mode_manager shows HOLD, and nothing else dies.
The figures of one run are in docs/reliability.md (bench/faults.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("gym_aloha")
pytest.importorskip("interbotix_xs_msgs.msg", reason="make fixtures (make test does)")
pytestmark = [pytest.mark.slow, pytest.mark.ros]

# Bounds (s): the adapter's defaults (runtime/supervision.py) plus one control tick and slack.
POLICY = 1.0 + 0.1  # the derived policy timeout never exceeds one chunk's span (1 s)
BOUNDS_SIM = {
    "policy_node killed": POLICY,
    "policy_node frozen (SIGSTOP)": POLICY,
    # The policy's max observation age, then the last chunk arrives one inference later (up to
    # ~0.2 s of sim time on a loaded 2-core machine), then no chunk for the policy timeout.
    "camera stopped": 0.3 + 0.2 + POLICY,
    "leader arm stopped": 0.2 + 0.3 + 0.1,  # max_state_age + teleop_timeout
    "joint states stopped": 0.2 + 0.3 + 0.1,  # max_state_age + state_timeout
}


@pytest.fixture(scope="module")
def drills(tmp_path_factory, tiny_checkpoint):
    from qwen_vla_ros.drills import run_drills

    return {r.name: r for r in run_drills(tmp_path_factory.mktemp("drills"), tiny_checkpoint,
                                          log=lambda m: None)}


def test_every_fault_is_detected_within_its_bound(drills):
    from qwen_vla_ros.drills import DRILLS

    assert set(drills) == {name for name, _, _ in DRILLS}
    for name, r in drills.items():
        assert r.detected, name
        if name in BOUNDS_SIM:
            assert r.detect_sim_s <= BOUNDS_SIM[name], (name, r.detect_sim_s, r.reported)
    assert drills["clock jumps back"].detect_wall_s <= 1.0
    assert "clock jumped back" in drills["clock jumps back"].reported
    # A SIGKILLed mode_manager leaves the graph when its DDS lease ends (about 20 s).
    assert "mode source lost" in drills["mode_manager killed"].reported
    assert "policy lost" in drills["camera stopped"].reported
    assert "leader arms lost" in drills["leader arm stopped"].reported
    assert "measured joint states lost" in drills["joint states stopped"].reported


def test_the_arms_hold_and_nothing_else_dies(drills):
    for name, r in drills.items():
        assert r.within_limits, (name, r.outside[:5])
        assert r.motion_after < 1e-9 and r.commands_after <= 4, (name, r.commands_after)
        assert r.died == [], (name, r.died)
        if name != "mode_manager killed":
            assert r.mode_manager_after == "HOLD", (name, r.mode_manager_after)
