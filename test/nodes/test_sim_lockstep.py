"""aloha_sim in lockstep (``lockstep_timeout_s`` > 0, sim/lockstep.py): once the followers
are commanded, one step per command of each arm, and no step while a command is missing; a
wall timer alone would step 50 times a second whatever arrived."""

from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy")
ix = pytest.importorskip("interbotix_xs_msgs.msg", reason="make fixtures (make test does)")
pytest.importorskip("gym_aloha")
from conftest import spinning, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402

from qwen_vla_ros.ros import qos  # noqa: E402
from qwen_vla_ros.ros.conversions import stamp_to_sec  # noqa: E402

pytestmark = pytest.mark.ros
ARMS = ("follower_left", "follower_right")
START = [0.0, -0.96, 1.16, 0.0, -0.3, 0.0]


def test_the_sim_steps_once_per_command_of_each_arm_and_waits_for_them():
    from qwen_vla_ros.nodes.aloha_sim import AlohaSimNode

    rclpy.init()
    sim = AlohaSimNode(parameter_overrides=[
        Parameter("camera_rate_hz", value=0.0), Parameter("lockstep_timeout_s", value=60.0)])
    probe = rclpy.create_node("lockstep_probe")
    clock: list[float] = []
    probe.create_subscription(Clock, "/clock", lambda m: clock.append(stamp_to_sec(m.clock)),
                              10)
    pubs = {a: probe.create_publisher(ix.JointGroupCommand, f"/{a}/commands/joint_group",
                                      qos.COMMAND) for a in ARMS}

    def command(arms=ARMS) -> None:
        for a in arms:
            pubs[a].publish(ix.JointGroupCommand(name="arm", cmd=START))

    try:
        with spinning(sim, probe):
            assert wait_for(lambda: len(clock) >= 5, 30), "the sim does not run before commands"
            assert all(p.get_subscription_count() for p in pubs.values())
            # First commands: the sim joins them (it may have stepped on its timer meanwhile).
            n = len(clock)
            command()
            assert wait_for(lambda: len(clock) > n, 30)
            for _ in range(5):
                n, t = len(clock), clock[-1]
                command()
                assert wait_for(lambda n=n: len(clock) > n, 30)
                assert len(clock) == n + 1 and clock[-1] == pytest.approx(t + 0.02, abs=1e-6)
            n = len(clock)
            command(ARMS[:1])  # one arm's command is not a step
            time.sleep(0.5)  # 25 steps on a wall timer
            assert len(clock) == n, "stepped without every arm's command"
            command(ARMS[1:])
            assert wait_for(lambda: len(clock) > n, 30)
    finally:
        for node in (sim, probe):
            node.destroy_node()
        rclpy.shutdown()
