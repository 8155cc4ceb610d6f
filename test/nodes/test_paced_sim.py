"""A paced simulation (runtime/pacing.py, sim/lockstep.Pace): real aloha_sim and policy_node
over DDS. The sim runs four times faster than real time, so a free-running sim would pass
the model's own inference time (tens of ms of wall time) and more; paced, it waits, and each
chunk comes out exactly its injected delay of sim time after its request."""

from __future__ import annotations

import json

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("interbotix_xs_msgs.msg", reason="make fixtures (make test does)")
pytest.importorskip("gym_aloha")
from conftest import spinning, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from qwen_vla_ros.ros import qos  # noqa: E402
from qwen_vla_ros.ros.conversions import stamp_to_sec  # noqa: E402

pytestmark = pytest.mark.ros


def test_a_paced_sim_waits_for_each_chunk_and_the_delay_is_exact(tiny_policy):
    from qwen_vla_ros.nodes.aloha_sim import AlohaSimNode
    from qwen_vla_ros.nodes.policy_node import PolicyNode

    rclpy.init()
    sim = AlohaSimNode(parameter_overrides=[
        Parameter("camera_rate_hz", value=10.0), Parameter("image_height", value=48),
        Parameter("image_width", value=64), Parameter("rate_factor", value=4.0),
        Parameter("pace_timeout_s", value=60.0)])
    policy = PolicyNode(policy=tiny_policy, parameter_overrides=[
        Parameter("use_sim_time", value=True), Parameter("embodiment", value="aloha"),
        Parameter("instruction", value="pick"), Parameter("inference_rate_hz", value=5.0),
        Parameter("torch_threads", value=1), Parameter("max_observation_age", value=0.5),
        Parameter("pace_sim", value=True), Parameter("added_latency_ms", value=300.0)])
    probe = rclpy.create_node("pace_probe")
    infos: list[dict] = []
    clock: list[float] = []
    probe.create_subscription(String, "/policy_node/observation_info",
                              lambda m: infos.append(json.loads(m.data)), qos.COMMAND)
    probe.create_subscription(Clock, "/clock", lambda m: clock.append(stamp_to_sec(m.clock)),
                              10)
    nodes = (sim, policy, probe)
    try:
        assert policy.active, policy.last_error
        with spinning(*nodes):
            assert wait_for(lambda: len(infos) >= 6, 120), (len(infos), policy.status)
            ticks = np.array([i["tick"] for i in infos])
            # requests back to back, each when the previous chunk came out: 300 ms of sim
            # time apart, whatever the model's wall time was
            np.testing.assert_allclose(np.diff(ticks), 0.3, atol=1e-6)
            assert sim.pace.waited > 0 and sim.pace.timeouts == 0
            assert policy.loop.delay.steps >= round(0.3 / policy.spec.dt)
            # deactivated, the policy lets the sim run free
            assert policy.trigger_deactivate() is not None and not policy.active
            assert wait_for(lambda: sim.pace.until == float("inf"), 10)
            n = len(clock)
            assert wait_for(lambda: len(clock) > n + 25, 30), "the sim stayed held"
    finally:
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown()
