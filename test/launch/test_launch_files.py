"""Every launch file, executed with the real launch library against this package's colcon
install space (build/pkg/install, `make package`): all its nodes start and stay up, parameters
and remappings arrive, and a launch that cannot run stops before any process starts.

Skipped, visibly, where launch / launch_ros are not installed (../shared/wheels) or the install
space was not built."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("launch_ros.actions", reason="launch/launch_ros not installed (make "
                                                 "installs them from ../shared/wheels)")
from conftest import wait_for  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from qwen_vla_ros.ros import qos  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "build" / "pkg" / "install"
RUNNER = Path(__file__).with_name("launch_runner.py")
pytestmark = [pytest.mark.ros, pytest.mark.skipif(
    not (INSTALL / "lib" / "qwen_vla_ros" / "policy_node").exists(),
    reason="no colcon install space of this package: run `make package` (make test does)")]
NO_GUI = ["rviz:=false"]


class Launch:
    """One launch file running in its own process group; ``events`` are its process starts
    and exits (launch_runner.py)."""

    def __init__(self, tmp: Path, name: str, args: list[str], domain: int,
                 prefixes: tuple[Path, ...] = ()) -> None:
        self.events_path = tmp / f"{name}-{uuid.uuid4().hex[:6]}.jsonl"
        self.token = uuid.uuid4().hex
        env = dict(os.environ)
        env["AMENT_PREFIX_PATH"] = os.pathsep.join(
            [str(INSTALL), *map(str, prefixes),
             *filter(None, env.get("AMENT_PREFIX_PATH", "").split(os.pathsep))])
        env["ROS_DOMAIN_ID"] = str(domain)  # the probe's (Probe)
        env["QVR_LAUNCH_TEST_TOKEN"] = self.token  # inherited: finds leftover processes
        self.log_path = tmp / f"{name}-{self.token[:6]}.log"
        with open(self.log_path, "w") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, str(RUNNER), str(ROOT / "launch" / f"{name}.launch.py"),
                 *args, "--events", str(self.events_path)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def events(self) -> list[dict]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]

    def started(self) -> set[str]:
        return {e["name"].rsplit("-", 1)[0] for e in self.events() if e["event"] == "start"}

    def exits(self) -> list[dict]:
        return [e for e in self.events() if e["event"] == "exit"]

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # as Ctrl-C on `ros2 launch`
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise AssertionError(f"launch did not stop on SIGINT:\n{self.output()[-3000:]}") \
                from None

    def leftovers(self) -> list[int]:
        """PIDs still running that this launch started (they carry its token)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if self.token.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found


class Probe:
    """The test's own ROS context and node, in a domain of its own: every launch gets a fresh
    ROS_DOMAIN_ID, so no participant left in discovery by an earlier launch (or by an in-process
    test) can answer for a node name of this one. Unpacks as ``node, executor``."""

    _launches = itertools.count()

    def __init__(self) -> None:
        from rclpy.executors import SingleThreadedExecutor

        # 200..229: apart from conftest's in-process domains (100..199); ports stay < 65535.
        self.domain = 200 + (os.getpid() + next(self._launches)) % 30
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain)
        self.node = rclpy.create_node("launch_probe", context=self.context)
        self.ex = SingleThreadedExecutor(context=self.context)
        self.ex.add_node(self.node)

    def __iter__(self):
        return iter((self.node, self.ex))

    def graph(self) -> str:
        """The nodes this probe sees, for failure messages."""
        return ", ".join(sorted(f"{ns.rstrip('/')}/{n}"
                                for n, ns in self.node.get_node_names_and_namespaces()))

    def close(self) -> None:
        self.ex.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture
def probe():
    probe = Probe()
    yield probe
    probe.close()


def nodes_up(probe, names: set[str]) -> bool:
    node, ex = probe
    ex.spin_once(timeout_sec=0.05)
    return names <= {n for n, _ in node.get_node_names_and_namespaces()}


def get_param(probe, node_name: str, name: str):
    node, ex = probe
    client = node.create_client(GetParameters, f"/{node_name}/get_parameters")
    try:
        assert client.wait_for_service(timeout_sec=20)
        future = client.call_async(GetParameters.Request(names=[name]))
        # a node answers between its own callbacks: policy_node loading its checkpoint on a
        # loaded 2-core machine took over 20 s once (2026-12-07), so the bound is generous
        ex.spin_until_future_complete(future, timeout_sec=90)
        assert future.done(), f"{node_name} did not answer get_parameters within 90 s"
        value = future.result().values[0]
        return {1: value.bool_value, 2: value.integer_value, 3: value.double_value,
                4: value.string_value}.get(value.type)
    finally:
        node.destroy_client(client)


def subscribed(probe, node_name: str) -> set[str]:
    node, _ = probe
    return {t for t, _ in node.get_subscriber_names_and_types_by_node(node_name, "/")}


@contextmanager
def running(tmp_path, probe, name, args, expected, prefixes=()):
    """The launch, once all ``expected`` nodes are in the graph; on exit: none of them died
    meanwhile, SIGINT stops it, and no process it started is left."""
    launch = Launch(tmp_path, name, args, probe.domain, prefixes)
    try:
        ok = wait_for(lambda: nodes_up(probe, expected) or launch.proc.poll() is not None, 90)
        assert ok and launch.proc.poll() is None, \
            f"{name}: nodes {sorted(expected)} did not all come up (graph: {probe.graph()}):\n" \
            f"{launch.output()[-4000:]}"
        assert launch.started() == expected, launch.started()
        yield launch
        assert launch.exits() == [], f"{name}: a node died: {launch.exits()}\n" \
                                     f"{launch.output()[-4000:]}"
    finally:
        launch.stop()
    assert launch.leftovers() == [], f"{name}: processes left behind after SIGINT"


def test_aloha_sim_launch_runs_the_stack_and_the_adapter_starts_the_arms(tmp_path, probe,
                                                                          tiny_checkpoint):
    expected = {"aloha_sim", "scripted_leader", "aloha_adapter", "policy_node", "mode_manager"}
    args = [*NO_GUI, "robot_state_publisher:=false", f"checkpoint:={tiny_checkpoint}",
            "seed:=7"]
    with running(tmp_path, probe, "aloha_sim", args, expected):
        assert get_param(probe, "aloha_sim", "seed") == 7  # launch argument -> parameter
        assert get_param(probe, "aloha_adapter", "robot_profile") == "aloha_sim"
        assert get_param(probe, "policy_node", "use_sim_time") is True  # parameter file
        # remaps (the graph may show a node before its subscriptions)
        assert wait_for(lambda: {"/policy_node/action_chunk", "/mode_manager/mode"}
                        <= subscribed(probe, "aloha_adapter"), 30)
        # The real start-up sequence against the sim's xs_sdk services: set-up calls, then
        # the move to START_ARM_POSE, then READY.
        node, _ = probe
        states: list[str] = []
        sub = node.create_subscription(String, "/aloha_adapter/state",
                                       lambda m: states.append(m.data), qos.LATCHED)
        try:
            assert wait_for(lambda: nodes_up(probe, set()) and "READY" in states, 60), states
        finally:
            node.destroy_subscription(sub)


def test_aloha_launch_on_a_machine_without_the_drivers(tmp_path, probe, tiny_checkpoint):
    expected = {"aloha_adapter", "policy_node", "mode_manager"}
    args = [*NO_GUI, "robot_state_publisher:=false", "launch_robot:=false", "device:=cpu",
            f"checkpoint:={tiny_checkpoint}", "robot:=aloha_main"]
    with running(tmp_path, probe, "aloha", args, expected) as launch:
        # The robot profile gives the cameras and the adapter's namespaces (policy_node
        # subscribes once its checkpoint is loaded: waited for, not assumed).
        assert wait_for(lambda: "/cam_high/camera/color/image_rect_raw"
                        in subscribed(probe, "policy_node"), 60), \
            f"policy_node subscribes {sorted(subscribed(probe, 'policy_node'))} " \
            f"(graph: {probe.graph()}):\n" \
            f"{launch.output()[-4000:]}"
        assert wait_for(lambda: "/follower_left/joint_states"
                        in subscribed(probe, "aloha_adapter"), 30)
        assert get_param(probe, "policy_node", "dtype") == "bfloat16"


STAND_IN_BRINGUP = """
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("robot", default_value="aloha_static"),
        LogInfo(msg=["stand-in Interbotix bringup, robot:=", LaunchConfiguration("robot")]),
        Node(package="qwen_vla_ros", executable="aloha_sim", name="aloha_sim",
             parameters=[{"camera_rate_hz": 0.0}]),
    ])
"""


def test_aloha_launch_includes_the_hardware_bringup_first(tmp_path, probe, tiny_checkpoint):
    """launch_robot:=true includes package `aloha`'s aloha_bringup.launch.py with robot:=,
    before our nodes. The real package cannot be installed here: a stand-in in its own ament
    prefix, whose launch file starts aloha_sim (the xs_sdk interface) in its place."""
    prefix = tmp_path / "interbotix"
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages/aloha").write_text("")
    (prefix / "share/aloha/launch").mkdir(parents=True)
    (prefix / "share/aloha/launch/aloha_bringup.launch.py").write_text(STAND_IN_BRINGUP)
    expected = {"aloha_sim", "aloha_adapter", "policy_node", "mode_manager"}
    args = [*NO_GUI, "robot_state_publisher:=false", "launch_robot:=true", "robot:=aloha_sim",
            "device:=cpu", f"checkpoint:={tiny_checkpoint}"]
    with running(tmp_path, probe, "aloha", args, expected, (prefix,)) as launch:
        assert "stand-in Interbotix bringup, robot:=aloha_sim" in launch.output()
        starts = [e["name"].rsplit("-", 1)[0] for e in launch.events() if e["event"] == "start"]
        assert starts[0] == "aloha_sim", starts  # the hardware first, then ours


def test_replay_launch_starts_its_nodes_without_a_bag(tmp_path, probe, tiny_checkpoint):
    expected = {"policy_node", "aloha_adapter", "mode_manager"}
    args = [*NO_GUI, "robot_state_publisher:=false", f"checkpoint:={tiny_checkpoint}"]
    with running(tmp_path, probe, "replay", args, expected):
        assert get_param(probe, "aloha_adapter", "startup") is False


def test_vln_sim_launch(tmp_path, probe, tiny_checkpoint):
    expected = {"base_sim", "navigation_node", "mode_manager"}
    with running(tmp_path, probe, "vln_sim", [*NO_GUI, f"checkpoint:={tiny_checkpoint}"],
                 expected):
        assert get_param(probe, "navigation_node", "instruction") == "go to the red box"


def test_vln_launch_with_cuda_on_a_cpu_machine_keeps_the_node_up(tmp_path, probe,
                                                                  tiny_checkpoint):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path is not reachable")
    expected = {"navigation_node", "mode_manager"}
    with running(tmp_path, probe, "vln", [*NO_GUI, "device:=cuda",
                                          f"checkpoint:={tiny_checkpoint}"],
                 expected) as launch:
        assert wait_for(lambda: "parameter 'device'" in launch.output(), 30), \
            launch.output()[-3000:]


@pytest.mark.parametrize("name,args,message", [
    ("aloha_sim", ["rviz:=true", "robot_state_publisher:=false"],
     "package 'rviz2' is not installed"),
    ("aloha_sim", ["rviz:=false", "robot_state_publisher:=true"],
     "package 'robot_state_publisher' is not installed"),
    ("aloha", ["rviz:=false", "robot_state_publisher:=false", "launch_robot:=true"],
     "package 'aloha' is not installed"),
    ("aloha", ["rviz:=false", "robot_state_publisher:=false", "robot:=nonexistent"],
     "unknown robot profile"),
])
def test_a_launch_that_cannot_run_fails_before_any_process_starts(tmp_path, name, args,
                                                                   message):
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    pkg = message.split("'")[1] if "is not installed" in message else None
    if pkg:
        try:
            get_package_prefix(pkg)
            pytest.skip(f"{pkg} is installed here")
        except PackageNotFoundError:
            pass
    launch = Launch(tmp_path, name, args, domain=int(os.environ["ROS_DOMAIN_ID"]))  # no node
    rc = launch.proc.wait(60)
    assert rc != 0
    assert message in launch.output(), launch.output()[-3000:]
    assert launch.started() == set(), "processes were started before the launch failed"
    assert launch.leftovers() == []
