"""Real-time chunking end to end over DDS: policy_node samples each chunk continuing the
prefix its measured delay commits, tags it (id, prefix, delay), and trajectory_adapter with
``blend: rtc`` executes exactly that schedule; a chunk planned against another schedule is
refused and the running plan continues. Sensors and clock from test_control_path's rig."""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Duration, Time  # noqa: E402
from conftest import spinning, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from test_control_path import build_stack  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from qwen_vla_ros.ros import qos  # noqa: E402
from qwen_vla_ros.ros.conversions import chunk_to_trajectory, sec_to_stamp  # noqa: E402
from qwen_vla_ros.runtime.executor import ChunkTag  # noqa: E402

pytestmark = pytest.mark.ros


def test_adapter_runs_the_policys_rtc_schedule_and_refuses_a_foreign_prefix(tiny_policy):
    from qwen_vla_ros.ros.services import call_trigger

    rclpy.init()
    spec, rig, nodes = build_stack(tiny_policy, [Parameter("rtc_prefix_steps", value=-1)],
                                   [Parameter("blend", value="rtc")])
    _, adapter, _, rig_node = nodes
    foreign = rig_node.create_publisher(JointTrajectory, "/policy_node/action_chunk",
                                        qos.COMMAND)
    try:
        with spinning(*nodes):
            assert call_trigger(rig.clients["engage_policy"]).success
            assert wait_for(lambda: adapter.chunk_counts["accepted"] >= 8, 60), \
                adapter.chunk_counts
            tags = [ChunkTag.parse(m.header.frame_id) for m in list(rig.chunks)]
            assert all(t is not None for t in tags)
            assert [t.id for t in tags] == list(range(len(tags)))
            assert tags[0].prefix == 0 and all(t.prefix > 0 for t in tags[2:]), tags
            assert all(t.prefix == t.delay for t in tags[2:])  # the measured delay
            assert adapter.chunk_counts["diverged"] == 0, adapter.chunk_counts
            # A chunk planned against some other schedule: refused (test_executor shows the
            # plan continuing untouched), and the policy's next chunks still continue it.
            t0 = rig.sim_t
            bad = np.tile((spec.lower() + spec.upper()) / 2, (spec.horizon, 1))
            msg = chunk_to_trajectory(bad, spec.action_names, spec.dt, JointTrajectory,
                                      JointTrajectoryPoint, Duration,
                                      stamp=sec_to_stamp(t0, Time),
                                      frame_id=ChunkTag(999, 5, 5).text())
            foreign.publish(msg)
            assert wait_for(lambda: adapter.chunk_counts["diverged"] == 1, 10)
            after = adapter.chunk_counts["accepted"]
            assert wait_for(lambda: adapter.chunk_counts["accepted"] >= after + 3, 30)
            assert adapter.chunk_counts["diverged"] == 1, "the policy's chunks refused after"
    finally:
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown()
    g = spec.dim("gripper").gripper
    prev = None
    for _, m in rig.commands:  # what reached the driver: one bounded step at a time
        q = np.array(m.points[0].positions)
        q[6] = g.to_normalised(q[6])
        if prev is not None:
            assert np.all(np.abs(q - prev) <= spec.max_velocity() * spec.dt + 1e-6)
        prev = q
    assert len(rig.commands) > 50
