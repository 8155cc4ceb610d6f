"""Launch files and `qwen-vla-ros bringup` cannot drift: both read config/bringup/*.yaml.
These tests check that every launch file names a description, and that every executable,
parameter file and argument a description names exists and matches."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest
import yaml

from qwen_vla_ros.bringup import EXECUTABLES, available_bringups, load_bringup
from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.launch_support import bringup_name_of

ROOT = Path(__file__).resolve().parents[1]


def console_scripts() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = " in node.value:
            scripts.add(node.value.split(" = ")[0].strip())
    return scripts


def test_every_launch_file_generates_an_existing_bringup():
    launches = sorted((ROOT / "launch").glob("*.launch.py"))
    assert launches
    for path in launches:
        name = bringup_name_of(path.read_text())
        assert name == path.name.removesuffix(".launch.py"), path
        assert name in available_bringups(), f"{path.name}: no config/bringup/{name}.yaml"


@pytest.mark.parametrize("name", available_bringups())
def test_bringup_names_only_real_executables_files_and_arguments(name):
    b = load_bringup(name)  # validates keys, executables, files, $(arg) references
    scripts = console_scripts()
    for node in b.nodes:
        assert node.executable in scripts, f"{node.executable} is not a console script"
        for f in node.parameters:
            data = yaml.safe_load((ROOT / f).read_text())
            assert any(k in (node.executable, "/**") for k in data), \
                f"{f} has no section for {node.executable}"
    for arg, a in b.arguments.items():
        assert a.description.strip(), arg
        used = any(f"$({arg})" in str(v) for n in b.nodes for v in n.overrides.values())
        assert used, f"argument '{arg}' of {name} is declared but never used"


def test_every_rviz_config_is_yaml_rviz_can_read():
    """RViz reads its config with yaml-cpp: an unquoted "key: value" inside a display's name
    made both files unreadable (RViz then opens its empty default). Every display has a class
    and a name; topics are absolute."""
    configs = sorted({load_bringup(n).rviz for n in available_bringups()})
    assert configs
    for rel in configs:
        data = yaml.safe_load((ROOT / rel).read_text())
        displays = data["Visualization Manager"]["Displays"]
        assert displays, rel
        for d in displays:
            assert d["Class"].startswith("rviz_default_plugins/") and d["Name"], (rel, d)
            topic = d.get("Topic", {}).get("Value")
            assert topic is None or topic.startswith("/"), (rel, d["Name"], topic)


def test_every_node_console_script_is_startable_by_bringup():
    nodes = {s for s in console_scripts() if s != "qwen-vla-ros"}
    assert nodes == set(EXECUTABLES)


def test_unknown_argument_is_rejected_by_name():
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) \['sed'\]"):
        load_bringup("aloha_sim").resolve({"sed": "1"})
    nodes = load_bringup("aloha_sim").resolve({"seed": "7", "checkpoint": "/tmp/x"})
    sim = next(n for n in nodes if n.executable == "aloha_sim")
    assert sim.overrides["seed"] == 7 and isinstance(sim.overrides["rate_factor"], float)


DECLARE = re.compile(r'(?:\bp|declare_parameter|_param)\((?:p,\s*)?f?"([\w.{}]+)"')


def node_modules(executable: str) -> tuple[list[str], str]:
    """The modules a node's code lives in, and their source."""
    modules = [EXECUTABLES[executable].module]
    src = (ROOT / (modules[0].replace(".", "/") + ".py")).read_text()
    if "ChunkAdapterNode" in src:
        modules.append("qwen_vla_ros.nodes.adapter_base")
        src += (ROOT / "qwen_vla_ros/nodes/adapter_base.py").read_text()
    return modules, src


def params_classes(executable: str) -> list[type]:
    """The parameters dataclasses (qwen_vla_ros.params) a node module holds."""
    return [value for module in node_modules(executable)[0]
            for value in vars(importlib.import_module(module)).values()
            if isinstance(value, type) and dataclasses.is_dataclass(value)
            and value.__name__.endswith("Params")]


def declared_parameters(executable: str) -> set[str]:
    """Names a node declares: its parameters dataclasses' fields and any declared one by
    one; f-string names like camera_topics.{cam} become prefixes."""
    _, src = node_modules(executable)
    names = {n.split("{")[0] for n in DECLARE.findall(src)} | {"use_sim_time"}
    for cls in params_classes(executable):
        names |= {f.name for f in dataclasses.fields(cls)}
    return names


def test_every_node_declares_its_parameters_from_one_described_list():
    from qwen_vla_ros.bringup import node_params

    for executable in EXECUTABLES:
        classes = params_classes(executable)
        assert classes, f"{executable}: no parameters dataclass"
        assert node_params(executable) in classes, executable  # what `params NODE` prints
        for cls in classes:
            cls()  # the defaults are valid
            for f in dataclasses.fields(cls):
                assert f.metadata.get("description"), f"{cls.__name__}.{f.name}: no description"


def test_parameter_files_use_declared_parameter_names():
    """A key in config/*.yaml must be a parameter its node declares: typos would be ignored."""
    for f in sorted((ROOT / "config").glob("*.yaml")):
        for node, section in yaml.safe_load(f.read_text()).items():
            if node == "/**":
                continue
            names = declared_parameters(node)
            for key in section["ros__parameters"]:
                ok = key in names or any(n.endswith(".") and key.startswith(n) for n in names)
                assert ok, f"{f.name}: '{key}' is not a parameter of {node} ({sorted(names)})"


@pytest.mark.ros
def test_bringup_nodes_get_their_parameter_files_and_remappings(tiny_checkpoint):
    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("interbotix_xs_msgs.msg", reason="make fixtures (make test does)")
    from qwen_vla_ros.bringup import create_node

    entries = load_bringup("replay").resolve({"checkpoint": str(tiny_checkpoint)})
    rclpy.init()
    nodes = []
    try:
        nodes = [create_node(e) for e in entries]
        by_name = {n.get_name(): n for n in nodes}
        policy, adapter = by_name["policy_node"], by_name["aloha_adapter"]
        assert policy.get_parameter("inference_rate_hz").value == 5.0  # policy_aloha.yaml
        assert policy.get_parameter("max_observation_age").value == 0.3
        assert policy.get_parameter("checkpoint").value == str(tiny_checkpoint)  # $(arg)
        assert all(n.get_parameter("use_sim_time").value for n in nodes)  # sim_time.yaml
        assert policy.active, policy.last_error
        topics = {s.topic_name for s in adapter.subscriptions}
        assert "/policy_node/action_chunk" in topics and "/mode_manager/mode" in topics
        # The bag plays exactly inputs: each is subscribed by the stack, none is published by
        # it (recorded outputs would mix with live ones), and the sim demo records them all.
        from qwen_vla_ros.embodiment.spec import load_embodiment
        from qwen_vla_ros.ros.bag_recorder import demo_topics

        played = set(load_bringup("replay").bag_topics)
        subscribed = {s.topic_name for n in nodes for s in n.subscriptions}
        published = {p.topic_name for n in nodes for p in n.publishers}
        assert played - {"/clock"} <= subscribed, played - subscribed
        assert not played & published
        spec = load_embodiment("aloha")
        assert played <= {t for t, _, _ in demo_topics(spec, spec.cameras)}
    finally:
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown()


@pytest.mark.ros
@pytest.mark.slow
def test_bringup_run_drives_the_sim_stack_and_stops_cleanly(tmp_path, tiny_checkpoint):
    """`qwen-vla-ros bringup aloha_sim` (all nodes in one process, one thread each; a shared
    multi-threaded executor broke the sim's EGL rendering): the start-up finishes, TELEOP
    engages through mode_manager, and SIGTERM ends it with exit 0 and no traceback (SIGINT
    is covered by test_shutdown)."""
    import json
    import os
    import signal
    import subprocess
    import sys

    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("gym_aloha")
    pytest.importorskip("interbotix_xs_msgs.msg", reason="make fixtures (make test does)")
    from conftest import wait_for
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from qwen_vla_ros.ros import qos

    log = tmp_path / "bringup.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qwen_vla_ros.cli", "bringup", "aloha_sim",
             f"checkpoint:={tiny_checkpoint}"], stdout=out, stderr=subprocess.STDOUT,
            env=dict(os.environ, MUJOCO_GL="egl"))
    rclpy.init()
    probe = rclpy.create_node("bringup_probe")
    statuses = []
    probe.create_subscription(String, "/aloha_adapter/effective_mode",
                              lambda m: statuses.append(json.loads(m.data)), qos.LATCHED)
    client = probe.create_client(Trigger, "/mode_manager/engage_teleop")
    try:
        def spin_for(cond, timeout):
            return wait_for(lambda: rclpy.spin_once(probe, timeout_sec=0.05) or cond(), timeout)

        assert spin_for(lambda: statuses and not statuses[-1]["refuses"], 90), log.read_text()
        fut = client.call_async(Trigger.Request()) if client.wait_for_service(30) else None
        assert fut is not None and spin_for(fut.done, 30), log.read_text()[-2000:]
        assert fut.result().success, fut.result().message
        assert spin_for(lambda: statuses[-1]["mode"] == "TELEOP", 60), statuses[-2:]
        proc.send_signal(signal.SIGTERM)  # as ros2 launch escalates to
        assert proc.wait(30) == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        probe.destroy_node()
        rclpy.shutdown()
