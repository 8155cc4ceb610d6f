"""aloha_adapter when the xs_sdk services are not there: the start-up fails with the service
named, the arms get no command, a requested POLICY is refused (not engaged later)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("interbotix_xs_msgs.msg", reason="make fixtures (make test does)")
from conftest import spinning, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from qwen_vla_ros.ros import qos  # noqa: E402
from qwen_vla_ros.ros.conversions import sec_to_stamp  # noqa: E402

pytestmark = pytest.mark.ros
ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]


def test_missing_driver_services_fail_the_start_up_and_the_arms_hold(tmp_path):
    from builtin_interfaces.msg import Time
    from interbotix_xs_msgs.msg import JointGroupCommand

    from qwen_vla_ros.embodiment.robot_profile import robots_dir
    from qwen_vla_ros.nodes.aloha_adapter import AlohaAdapter
    from qwen_vla_ros.nodes.mode_manager import ModeManager
    from qwen_vla_ros.ros.services import call_trigger

    data = yaml.safe_load((robots_dir() / "aloha_stationary.yaml").read_text())
    data["name"] = "quick"
    data["setup"]["service_timeout_s"] = 0.5
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(data))
    rclpy.init()
    adapter = AlohaAdapter(cli_args=["--ros-args", "-r", "mode:=/mode_manager/mode"],
                           parameter_overrides=[Parameter("robot_profile", value=str(path))])
    modes = ModeManager()
    rig = rclpy.create_node("rig")
    states: list[str] = []
    commands: list = []
    rig.create_subscription(String, "/aloha_adapter/state", lambda m: states.append(m.data),
                            qos.LATCHED)
    for r in ("follower_left", "follower_right"):
        rig.create_subscription(JointGroupCommand, f"/{r}/commands/joint_group",
                                commands.append, qos.COMMAND)
    pubs = [rig.create_publisher(JointState, f"/{r}/joint_states", qos.SENSOR)
            for r in ("follower_left", "follower_right")]

    def publish():
        stamp = sec_to_stamp(rig.get_clock().now().nanoseconds * 1e-9, Time)
        for pub in pubs:
            msg = JointState(name=[*ARM, "gripper", "left_finger", "right_finger"],
                             position=[0.0] * 6 + [1.0, 0.05, -0.05])
            msg.header.stamp = stamp
            pub.publish(msg)

    rig.create_timer(0.02, publish)
    policy = rig.create_client(Trigger, "/mode_manager/engage_policy")
    start = rig.create_client(Trigger, "/aloha_adapter/start")
    try:
        with spinning(adapter, modes, rig):
            assert call_trigger(policy).success  # requested during start-up: waits
            assert wait_for(lambda: any(s.startswith("FAILED") for s in states), 20), states
            failed = next(s for s in states if s.startswith("FAILED"))
            assert "/follower_left/reboot_motors(" in failed and "not available" in failed
            assert wait_for(lambda: adapter.pending_mode is None, 5)  # refused, not deferred
            assert adapter.mode.value == "HOLD" and commands == []
            n = len(states)
            assert call_trigger(start).success  # retry: fails again the same way
            assert wait_for(lambda: len(states) >= n + 2 and states[-1].startswith("FAILED"),
                            20), states
            assert adapter.mode.value == "HOLD" and commands == []
            assert np.all(np.isfinite(adapter.measured.state(adapter.now(), 1.0)))
    finally:
        for n in (adapter, modes, rig):
            n.destroy_node()
        rclpy.shutdown()
