"""The whole teleop path in simulation: aloha_sim -> scripted_leader -> aloha_adapter (TELEOP)
-> interbotix commands -> aloha_sim, over DDS with sim time. Solving transfer-cube this way
proves sim, interbotix interface and adapter agree on joint order, units and grippers."""

from __future__ import annotations

import json
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("interbotix_xs_msgs.msg", reason="make fixtures (make test does)")
pytest.importorskip("gym_aloha")
from conftest import spinning  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from qwen_vla_ros.ros import qos  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
EPISODES = 10


def test_scripted_leader_solves_transfer_cube_through_the_teleop_path():
    from qwen_vla_ros.nodes.aloha_adapter import AlohaAdapter
    from qwen_vla_ros.nodes.aloha_sim import AlohaSimNode
    from qwen_vla_ros.nodes.mode_manager import ModeManager
    from qwen_vla_ros.nodes.scripted_leader import ScriptedLeader

    rclpy.init()
    sim_time = [Parameter("use_sim_time", value=True)]
    sim = AlohaSimNode(parameter_overrides=[
        Parameter("seed", value=0), Parameter("rate_factor", value=3.0),
        Parameter("camera_rate_hz", value=0.0), Parameter("episode_steps", value=450),
        # the sim steps with the adapter's commands: a loaded machine slows it, as collect
        Parameter("lockstep_timeout_s", value=1.0)])
    leader = ScriptedLeader(cli_args=["--ros-args", "-r", "mode:=/mode_manager/mode"],
                            parameter_overrides=sim_time)  # it starts with TELEOP
    adapter = AlohaAdapter(cli_args=["--ros-args", "-r", "mode:=/mode_manager/mode"],
                           parameter_overrides=[*sim_time,
                                                Parameter("robot_profile", value="aloha_sim")])
    modes = ModeManager()
    probe = rclpy.create_node("probe")
    results = []
    probe.create_subscription(String, "/aloha_sim/episode_result",
                              lambda m: results.append(json.loads(m.data)), qos.COMMAND)
    teleop = probe.create_client(Trigger, "/mode_manager/engage_teleop")
    nodes = (sim, leader, adapter, modes, probe)
    try:
        from qwen_vla_ros.ros.services import call_trigger

        with spinning(*nodes):
            assert call_trigger(teleop).success
            end = time.monotonic() + 400
            while len(results) < EPISODES and time.monotonic() < end:
                time.sleep(0.1)
        assert len(results) >= EPISODES, f"only {len(results)} episodes finished"
        done = results[:EPISODES]
        assert [r["seed"] for r in done] == list(range(EPISODES))
        successes = sum(r["success"] for r in done)
        assert successes >= 9, f"{successes}/{EPISODES}: {done}"
    finally:
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown()
