"""Faults at the adapter, in one process on a clock the test drives (/clock): aloha_adapter and
mode_manager (watching the adapter's ~/effective_mode) against the xs_sdk rig of
test_aloha_adapter. Each test gets fresh nodes; detection times are in that clock."""

from __future__ import annotations

import json

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("interbotix_xs_msgs.msg", reason="make fixtures (make test does)")
from conftest import spinning, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from test_aloha_adapter import SteppedRig, _chunk  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from qwen_vla_ros.embodiment.spec import load_embodiment  # noqa: E402
from qwen_vla_ros.ros import qos  # noqa: E402
from qwen_vla_ros.ros.services import call_trigger  # noqa: E402

pytestmark = pytest.mark.ros
SIM = [Parameter("use_sim_time", value=True)]


class ClockedRig(SteppedRig):
    """The xs rig on its free-running clock (test_aloha_adapter's SteppedRig), with the
    adapter's and mode_manager's reports recorded. ``sim_t`` may be set (a jump)."""

    def __init__(self, node) -> None:
        super().__init__(node)
        self.statuses: list[tuple[float, dict]] = []  # (rig time at arrival, status)
        self.modes: list[str] = []
        self.markers: list[str] = []
        node.create_subscription(String, "/aloha_adapter/effective_mode", self._status,
                                 qos.LATCHED)
        node.create_subscription(String, "/mode_manager/mode",
                                 lambda m: self.modes.append(m.data), qos.LATCHED)
        node.create_subscription(Marker, "/mode_manager/mode_marker",
                                 lambda m: self.markers.append(m.text), qos.LATCHED)

    def _status(self, msg) -> None:
        self.statuses.append((self.sim_t, json.loads(msg.data)))

    def fault(self, text: str) -> dict | None:
        return next((s for _, s in self.statuses if text in s["fault"]), None)

    def after(self, seconds: float) -> bool:
        """Wait until the rig's clock advanced by ``seconds``."""
        end = self.sim_t + seconds
        return wait_for(lambda: self.sim_t >= end, 10 + 3 * seconds)


@pytest.fixture
def rig():
    from qwen_vla_ros.nodes.aloha_adapter import AlohaAdapter
    from qwen_vla_ros.nodes.mode_manager import ModeManager

    rclpy.init()
    nodes = []
    try:
        nodes.append(rclpy.create_node("xs_rig"))
        rig = ClockedRig(nodes[0])
        nodes.append(AlohaAdapter(
            cli_args=["--ros-args", "-r", "mode:=/mode_manager/mode"],
            parameter_overrides=[*SIM, Parameter("startup", value=False)]))
        nodes.append(ModeManager(parameter_overrides=[
            *SIM, Parameter("adapters", value=["aloha_adapter"])]))
        with spinning(*nodes):
            assert wait_for(lambda: rig.statuses, 10)
            yield rig
    finally:
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown()


def engage(rig, name: str, timeout: float = 10.0):
    return call_trigger(rig.clients[name], timeout=timeout, attempts=2)


def test_policy_lost_holds_where_the_arm_is_and_mode_manager_shows_it(rig):
    spec = load_embodiment("aloha")
    r = engage(rig, "engage_policy")
    assert r.success, r.message
    pose = np.concatenate([rig.pose("follower_left"), rig.pose("follower_right")])
    target = pose.copy()
    target[0] += 0.2  # the arm is moving toward this when the policy goes quiet
    t_last = rig.sim_t
    rig.chunk_pub.publish(_chunk(spec, np.tile(target, (50, 1)), t_last))
    assert wait_for(lambda: rig.fault("policy lost"), 15), rig.statuses[-3:]
    status = rig.fault("policy lost")
    # No chunk after the first: its span (1 s), from when it arrived; not before.
    assert 0.95 <= status["stamp"] - t_last <= 1.0 + 0.1, status
    assert status["mode"] == "HOLD" and status["requested"] == "POLICY"
    assert wait_for(lambda: rig.modes[-1] == "HOLD", 5), rig.modes
    assert wait_for(lambda: "policy lost" in rig.markers[-1], 5), rig.markers[-1:]
    n = len(rig.groups)
    held = rig.follower["follower_left"].copy()
    assert rig.after(0.5)
    assert len(rig.groups) == n, "commands after the fault"
    np.testing.assert_allclose(rig.follower["follower_left"], held, atol=1e-6)
    # The operator re-engages; the adapter does so from the measured pose.
    assert engage(rig, "engage_policy").success


def test_leader_lost_in_teleop_holds_until_engaged_again(rig):
    assert engage(rig, "engage_teleop").success
    assert wait_for(lambda: np.allclose(rig.follower["follower_left"],
                                        rig.leader["leader_left"], atol=1e-4), 10)
    t_stop = rig.sim_t
    rig.leaders_on = False
    assert wait_for(lambda: rig.fault("leader arms lost"), 10), rig.statuses[-3:]
    detect = rig.fault("leader arms lost")["stamp"] - t_stop
    assert detect <= 0.5 + 0.1, detect  # max_state_age 0.2 + teleop_timeout 0.3
    assert wait_for(lambda: rig.modes[-1] == "HOLD", 5)
    rig.leaders_on = True
    n = len(rig.groups)
    assert rig.after(0.5)
    assert len(rig.groups) == n, "re-engaged by itself when the leaders came back"
    assert engage(rig, "engage_teleop").success
    assert wait_for(lambda: len(rig.groups) > n, 5)


def test_engage_without_a_measured_pose_waits_then_is_refused_and_shown(rig):
    rig.followers_on = False
    assert rig.after(0.4)  # the last measured pose is stale now
    n = len(rig.groups)
    t0 = rig.sim_t
    r = engage(rig, "engage_policy")
    assert r.success, r.message  # asked for; the adapter says why it waits, then refuses
    assert wait_for(lambda: "no valid measured pose" in rig.statuses[-1][1]["waiting"], 5)
    assert wait_for(lambda: rig.fault("refused"), 15), rig.statuses[-3:]
    status = rig.fault("refused")
    assert "no valid measured pose" in status["fault"] and status["mode"] == "HOLD"
    assert 3.0 - 0.05 <= status["stamp"] - t0 <= 3.0 + 0.2  # engage_timeout
    assert wait_for(lambda: rig.modes[-1] == "HOLD", 5), rig.modes
    assert wait_for(lambda: "refused" in rig.markers[-1], 5), rig.markers[-1:]
    assert len(rig.groups) == n


def test_engage_waits_for_the_measured_pose_then_engages(rig):
    rig.followers_on = False
    assert rig.after(0.4)
    assert engage(rig, "engage_teleop").success
    assert wait_for(lambda: any(s["waiting"] for _, s in rig.statuses), 10)
    rig.followers_on = True
    assert wait_for(lambda: rig.statuses[-1][1]["mode"] == "TELEOP", 10), rig.statuses[-2:]
    assert rig.modes[-1] == "TELEOP"


def test_a_mode_the_adapter_would_refuse_is_refused_at_once(rig):
    from std_srvs.srv import Trigger

    sleep = rig.node.create_client(Trigger, "/aloha_adapter/sleep")
    assert call_trigger(sleep).success
    assert wait_for(lambda: rig.statuses[-1][1]["refuses"], 30), rig.statuses[-2:]
    r = engage(rig, "engage_teleop")
    assert not r.success and "asleep" in r.message, r.message
    assert rig.modes[-1] == "HOLD"


def test_clock_jump_back_ends_the_driving_mode(rig):
    assert engage(rig, "engage_teleop").success
    rig.sim_t -= 5.0
    assert wait_for(lambda: rig.fault("clock jumped back"), 10), rig.statuses[-3:]
    assert wait_for(lambda: rig.modes[-1] == "HOLD", 5)
