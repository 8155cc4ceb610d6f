"""``qwen-vla-ros play``: a bag played with its clock drives a real policy_node (sim time),
as ``ros2 bag play --clock`` would."""

from __future__ import annotations

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from conftest import spinning, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from qwen_vla_ros.replay.bagio import open_bag  # noqa: E402
from qwen_vla_ros.replay.play import play  # noqa: E402
from qwen_vla_ros.ros import qos  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    from test_offline import write_bag

    path = tmp_path_factory.mktemp("play") / "bag"
    write_bag(path, storage="mcap")
    return path


def test_play_drives_a_sim_time_policy_node(bag, tiny_policy):
    from test_offline import T0

    from qwen_vla_ros.nodes.policy_node import PolicyNode

    rclpy.init()
    nodes = []
    try:
        policy = PolicyNode(policy=tiny_policy, parameter_overrides=[
            Parameter("use_sim_time", value=True),
            Parameter("embodiment", value="vx300s_single"),
            Parameter("instruction", value="pick up the cube"),
            Parameter("camera_topics.cam_wrist", value="/cam_wrist/image_raw/compressed"),
            Parameter("camera_compressed.cam_wrist", value=True),
            Parameter("joint_state_topics.robot", value="/joint_states"),
            Parameter("max_observation_age", value=0.3),
            Parameter("torch_threads", value=1)])
        probe = rclpy.create_node("probe")
        nodes += [policy, probe]
        chunks, clocks, infos = [], [], []
        probe.create_subscription(JointTrajectory, "/policy_node/action_chunk",
                                  chunks.append, qos.COMMAND)
        probe.create_subscription(String, "/policy_node/observation_info", infos.append,
                                  qos.COMMAND)
        probe.create_subscription(Clock, "/clock", clocks.append, 10)
        stats = {}
        with spinning(policy, probe):
            wall = time.monotonic()
            th = threading.Thread(target=lambda: stats.update(play(bag, rate=1.0)))
            th.start()
            th.join(30)
            wall = time.monotonic() - wall
            assert wait_for(lambda: len(chunks) >= 5, 5), policy.status
            # One observation_info per chunk: the last tick's pair may still be on its way
            # (no tick comes after the bag's last /clock, so the counts settle).
            assert wait_for(lambda: len(infos) == len(chunks), 5), (len(infos), len(chunks))
        assert stats["messages"] == sum(open_bag(bag).counts.values()) - stats[
            "skipped_topics"] * 1  # the undecodable /vendor/blob is skipped
        assert stats["skipped_topics"] == 1
        # Recorded pace: a 4 s bag is never played faster than it was recorded (slower only
        # when the machine is loaded: no upper bound in wall time).
        assert not th.is_alive() and wall >= 3.8, wall
        # /clock is the bag's log time, so stamps and clock agree as recorded.
        first = clocks[0].clock.sec + clocks[0].clock.nanosec * 1e-9
        assert T0 - 0.1 <= first <= T0 + 1.0
        stamps = [c.header.stamp.sec + c.header.stamp.nanosec * 1e-9 for c in chunks]
        assert all(T0 <= s <= T0 + 4.1 for s in stamps), stamps
    finally:
        # Destroyed, as the other node tests do; the policy_node (a LifecycleNode) leaves
        # the graph only once collected too (test/conftest.py collects after each file).
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
