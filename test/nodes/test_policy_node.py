"""policy_node lifecycle, parameter validation, and bad inputs at the node level.

The lifecycle test runs the node on a clock the rig drives (/clock): free-running (50 ms per
50 ms of wall time) while the test waits for an event, stepped tick by tick (each inference
tick waited for) where it checks that nothing is published for a while."""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time  # noqa: E402
from conftest import spinning, wait_for  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from qwen_vla_ros.ros import qos  # noqa: E402
from qwen_vla_ros.ros.conversions import rgb_to_image, sec_to_stamp  # noqa: E402

pytestmark = pytest.mark.ros
EMB = "vx300s_single"
NAMES = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]


@pytest.fixture()
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def params(**extra):
    base = {"embodiment": EMB, "instruction": "pick", "inference_rate_hz": 10.0,
            "torch_threads": 1, "max_observation_age": 0.3}
    base.update(extra)
    return [Parameter(k, value=v) for k, v in base.items()]



def test_unknown_camera_name_fails_configure_by_name_and_node_stays_up(ros, tiny_policy):
    from qwen_vla_ros.nodes.policy_node import PolicyNode

    node = PolicyNode(policy=tiny_policy, parameter_overrides=[
        *params(), Parameter("camera_topics.cam_side", value="/side/image_raw")])
    assert "cam_side" in node.last_error
    assert "not cameras the policy sees on 'vx300s_single'" in node.last_error
    assert not node.active
    node.destroy_node()


def test_a_checkpoint_that_sees_fewer_cameras_is_fed_only_those(ros, tiny_policy):
    """A checkpoint trained on the top camera alone (train --cameras): the node subscribes
    and waits for that camera only, not every camera of the body."""
    import copy

    from qwen_vla_ros.nodes.policy_node import PolicyNode

    top_only = copy.copy(tiny_policy)  # the session's policy itself stays as it is
    top_only.embodiments = {**tiny_policy.embodiments,
                            EMB: tiny_policy.spec(EMB).with_cameras(["cam_high"])}
    node = PolicyNode(policy=top_only, parameter_overrides=params())
    assert node.last_error == "" and node.loop.spec.cameras == ("cam_high",)
    assert node.loop.images.cameras == ("cam_high",)
    assert node.has_parameter("camera_topics.cam_high")
    assert not node.has_parameter("camera_topics.cam_wrist")
    node.destroy_node()
    # A topic for a camera of the body that this checkpoint does not see: named as such.
    node = PolicyNode(policy=top_only, parameter_overrides=[
        *params(), Parameter("camera_topics.cam_wrist", value="/wrist/image_raw")])
    assert "cam_wrist" in node.last_error and "policy sees" in node.last_error
    assert "['cam_high']" in node.last_error and not node.active
    node.destroy_node()


def test_missing_checkpoint_fails_configure_with_a_clear_error(ros):
    from qwen_vla_ros.nodes.policy_node import PolicyNode

    node = PolicyNode(parameter_overrides=params(checkpoint="/nonexistent/ckpt"))
    assert "configure failed" in node.last_error and "does not exist" in node.last_error
    node.destroy_node()


def test_lifecycle_deactivate_stops_chunks_and_cleanup_releases(ros, tiny_policy):
    from qwen_vla_ros.nodes.policy_node import PolicyNode

    node = PolicyNode(policy=tiny_policy, parameter_overrides=[
        *params(autostart=False), Parameter("use_sim_time", value=True)])
    assert not node.active and node.policy is None
    rig = rclpy.create_node("rig")
    clock = {"t": 100.0, "running": True}
    clock_pub = rig.create_publisher(Clock, "/clock", 10)
    chunks = []
    rig.create_subscription(JointTrajectory, "/policy_node/action_chunk", chunks.append,
                            qos.COMMAND)
    cams = {c: rig.create_publisher(Image, f"{c}/image_raw", qos.SENSOR)
            for c in ("cam_high", "cam_wrist")}
    js = rig.create_publisher(JointState, "joint_states", qos.SENSOR)
    bad = {"encoding": False, "step": False, "names": False, "stop": False}
    from diagnostic_msgs.msg import DiagnosticArray
    diags = []
    rig.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    frame = np.zeros((60, 80, 3), np.uint8)

    def step():
        """Inputs stamped t, then /clock reads t (as the simulators do)."""
        clock["t"] = round(clock["t"] + 0.05, 6)
        stamp = sec_to_stamp(clock["t"], Time)
        for name, pub in cams.items():
            if bad["stop"] and name == "cam_high":
                continue  # a camera gone quiet
            msg = rgb_to_image(frame, Image, stamp=stamp)
            if bad["encoding"] and name == "cam_high":
                msg.encoding = "16UC1"
            if bad["step"] and name == "cam_wrist":
                msg.step = msg.step + 4  # says padded rows, data is not
            pub.publish(msg)
        names = ["knee"] * 7 if bad["names"] else NAMES
        m = JointState(name=names, position=[0.0] * 7)
        m.header.stamp = stamp
        js.publish(m)
        clock_pub.publish(Clock(clock=stamp))

    def free_run():
        if clock["running"]:
            step()

    def advance(seconds: float) -> None:
        """Pause the free run; advance ``seconds``, each inference tick (0.1 s) waited for."""
        clock["running"] = False
        for _ in range(round(seconds / 0.1)):
            n = node.ticks
            step()
            step()
            assert wait_for(lambda n=n: node.ticks > n, 10), clock["t"]
        clock["running"] = True
    rig.create_timer(0.05, free_run)
    try:
        with spinning(node, rig):
            assert wait_for(lambda: clock["t"] > 100.5, 10)  # 0.5 s of inputs and clock
            assert chunks == [] and node.ticks == 0, "inferred before configure/activate"
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            assert wait_for(lambda: len(chunks) >= 2)
            for case, needle in (("encoding", "unsupported encoding '16UC1'"),
                                 ("step", "expected step"),
                                 ("names", "none of the expected joints")):
                bad[case] = True
                assert wait_for(lambda n=needle: n in node.status, 5), (case, node.status)
                advance(0.5)  # the last good data ages out (max_observation_age 0.3 s)
                count = len(chunks)
                advance(0.6)
                assert len(chunks) <= count + 1, f"kept inferring with bad {case}"
                bad[case] = False
                assert wait_for(lambda c=count: len(chunks) > c + 1), f"no recovery after {case}"
            # A camera stops: every tick is rejected, which /diagnostics shows as ERROR.
            bad["stop"] = True
            assert wait_for(lambda: "no valid observation" in node.status
                            and "cam_high" in node.status, 5), node.status
            assert wait_for(lambda: any(st.level == b"\x02" or st.level == 2
                                        for a in diags[-2:] for st in a.status
                                        if "cam_high" in st.message), 5), diags[-1:]
            bad["stop"] = False
            assert wait_for(lambda: node.status == "ok", 5), node.status
            assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            advance(0.3)  # a chunk already being inferred is not published either
            count = len(chunks)
            advance(0.6)
            assert len(chunks) == count, "published while inactive"
            assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
            assert node.policy is None and node.host is None
    finally:
        node.destroy_node()
        rig.destroy_node()


def test_compile_parameter_decides_per_device(tiny_checkpoint, monkeypatch, tmp_path):
    """compile: auto compiles only on CUDA; on compiles (lazily: kernels at the first chunk
    of a layout) with the cache directory given; off never."""
    import logging

    from qwen_vla_ros.model.policy import QwenVLAPolicy
    from qwen_vla_ros.nodes.policy_io import compile_policy

    log = logging.getLogger("test")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    policy = QwenVLAPolicy.from_pretrained(tiny_checkpoint)
    assert not compile_policy(policy, "auto", "", "", log) and not policy.compiled
    assert not compile_policy(policy, "off", "", "", log) and not policy.compiled
    assert compile_policy(policy, "on", "", str(tmp_path), log) and policy.compiled
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)
