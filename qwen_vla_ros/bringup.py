"""Bringup descriptions (config/bringup/NAME.yaml): which nodes, with which parameter files,
overrides and remappings, and which arguments a user may set.

Both ``ros2 launch qwen_vla_ros NAME.launch.py`` (via launch_support.py) and
``qwen-vla-ros bringup NAME`` (no launch_ros needed, one process) read the same file, so the
two cannot drift. Values ``$(arg)`` refer to declared arguments.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from qwen_vla_ros.embodiment.spec import check_keys
from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.paths import share_dir


class Executable(NamedTuple):
    module: str  # the node's module
    node: str  # its node class
    params: str  # "module:Class" of its parameters dataclass (ROS-free: `qwen-vla-ros params`)


# Every console script that is a node is listed here.
EXECUTABLES: dict[str, Executable] = {
    "policy_node": Executable("qwen_vla_ros.nodes.policy_node", "PolicyNode",
                              "qwen_vla_ros.runtime.policy_loop:PolicyParams"),
    "aloha_adapter": Executable("qwen_vla_ros.nodes.aloha_adapter", "AlohaAdapter",
                                "qwen_vla_ros.runtime.startup:AlohaAdapterParams"),
    "trajectory_adapter": Executable("qwen_vla_ros.nodes.trajectory_adapter",
                                     "TrajectoryAdapter",
                                     "qwen_vla_ros.runtime.supervision:AdapterParams"),
    "velocity_adapter": Executable("qwen_vla_ros.nodes.velocity_adapter", "VelocityAdapter",
                                   "qwen_vla_ros.runtime.velocity:VelocityAdapterParams"),
    "mode_manager": Executable("qwen_vla_ros.nodes.mode_manager", "ModeManager",
                               "qwen_vla_ros.runtime.modes:ModeManagerParams"),
    "aloha_sim": Executable("qwen_vla_ros.nodes.aloha_sim", "AlohaSimNode",
                            "qwen_vla_ros.sim.aloha:AlohaSimParams"),
    "scripted_leader": Executable("qwen_vla_ros.nodes.scripted_leader", "ScriptedLeader",
                                  "qwen_vla_ros.sim.scripted:ScriptedLeaderParams"),
    "navigation_node": Executable("qwen_vla_ros.nodes.navigation_node", "NavigationNode",
                                  "qwen_vla_ros.runtime.nav_control:NavigationParams"),
    "base_sim": Executable("qwen_vla_ros.nodes.base_sim", "BaseSimNode",
                           "qwen_vla_ros.sim.base:BaseSimParams"),
}
ARG_RE = re.compile(r"^\$\((\w+)\)$")
FAST_DDS_PROFILE = "config/fastdds_shm.xml"


@dataclass(frozen=True)
class Argument:
    default: str
    description: str


@dataclass(frozen=True)
class NodeEntry:
    executable: str
    parameters: tuple[str, ...]  # share-relative parameter files
    overrides: dict[str, Any] = field(default_factory=dict)  # values may be "$(arg)"
    remappings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Visualization:
    """robot_state_publishers for RViz (launch only: rsp and rviz2 are not Python nodes)."""

    urdf: str  # share-relative xacro
    joint_states: str
    ghost_joint_states: str


@dataclass(frozen=True)
class HardwareLaunch:
    """Another package's launch file that brings the hardware up (launch only), included
    before our nodes when the launch argument ``switch`` is true."""

    package: str
    launch: str  # package-share-relative launch file
    switch: str  # name of the true/false launch argument (default false)
    arguments: dict[str, str] = field(default_factory=dict)  # values may be "$(arg)"


@dataclass(frozen=True)
class Bringup:
    name: str
    description: str
    arguments: dict[str, Argument]
    nodes: tuple[NodeEntry, ...]
    visualization: Visualization | None = None
    bag_play: bool = False  # launch adds `ros2 bag play $(bag) --topics ...` (argument `bag`)
    bag_topics: tuple[str, ...] = ()  # what that plays: the stack's inputs, never its outputs
    rviz: str = "config/aloha.rviz"  # share-relative RViz config the launch file opens
    hardware: HardwareLaunch | None = None

    def values(self, values: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every declared argument's value (given or default); unknown names are an error."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.arguments))
        if unknown:
            raise ConfigError(f"bringup '{self.name}': unknown argument(s) {unknown}; "
                              f"known: {sorted(self.arguments)}")
        return {k: str(values.get(k, a.default)) for k, a in self.arguments.items()}

    def resolve(self, values: Mapping[str, str] | None = None) -> list[NodeEntry]:
        """Nodes with every $(arg) replaced (typed as YAML would type it)."""
        merged = self.values(values)
        out = []
        for node in self.nodes:
            overrides = {}
            for key, value in node.overrides.items():
                m = ARG_RE.match(str(value))
                if m:
                    raw = merged[m.group(1)]
                    overrides[key] = yaml.safe_load(raw) if raw != "" else ""
                else:
                    overrides[key] = value
            entry = NodeEntry(node.executable, node.parameters, overrides, node.remappings)
            check_references(entry)
            out.append(entry)
        return out


def node_parameters(entry: NodeEntry) -> dict[str, Any]:
    """The parameters a node will start with: its files' sections (``/**`` and its own
    name, in file order), then the overrides."""
    params: dict[str, Any] = {}
    for f in entry.parameters:
        data = yaml.safe_load((share_dir() / f).read_text()) or {}
        for section in ("/**", entry.executable):
            params.update((data.get(section) or {}).get("ros__parameters") or {})
    params.update(entry.overrides)
    return params


def check_references(entry: NodeEntry) -> None:
    """Names a node's parameters point at (embodiment, robot profile) must exist and fit
    together: a wrong `robot:=` fails here, before any process starts."""
    from qwen_vla_ros.embodiment.robot_profile import load_profile
    from qwen_vla_ros.embodiment.spec import load_embodiment

    params = node_parameters(entry)
    if params.get("robot_profile"):
        profile = load_profile(str(params["robot_profile"]))
        profile.check(load_embodiment(str(params.get("embodiment", profile.embodiment))))
    elif params.get("embodiment"):
        load_embodiment(str(params["embodiment"]))


def load_bringup(name: str, directory: Path | None = None) -> Bringup:
    folder = directory or share_dir() / "config" / "bringup"
    path = folder / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"unknown bringup '{name}'; known: {known}")
    data = yaml.safe_load(path.read_text())
    where = path.name
    check_keys(data, ("description", "arguments", "nodes", "visualization", "bag_play",
                      "bag_topics", "rviz", "hardware"),
               ("description", "nodes"), where)
    arguments = {}
    for arg, spec in (data.get("arguments") or {}).items():
        check_keys(spec, ("default", "description"), ("default", "description"),
                   f"{where}.arguments.{arg}")
        if not str(spec["description"]).strip():
            raise ConfigError(f"{where}: argument '{arg}' has an empty description")
        arguments[arg] = Argument(str(spec["default"]), str(spec["description"]))
    nodes = []
    for i, entry in enumerate(data["nodes"]):
        w = f"{where}.nodes[{i}]"
        check_keys(entry, ("executable", "parameters", "overrides", "remappings"),
                   ("executable",), w)
        exe = entry["executable"]
        if exe not in EXECUTABLES:
            raise ConfigError(f"{w}: unknown executable '{exe}'; known: {sorted(EXECUTABLES)}")
        overrides = dict(entry.get("overrides") or {})
        for key, value in overrides.items():
            m = ARG_RE.match(str(value))
            if m and m.group(1) not in arguments:
                raise ConfigError(f"{w}: override '{key}' uses undeclared argument "
                                  f"'{m.group(1)}'")
        params = tuple(entry.get("parameters") or ())
        missing = [p for p in params if not (share_dir() / p).exists()]
        if missing:
            raise ConfigError(f"{w}: parameter file(s) {missing} not found")
        nodes.append(NodeEntry(exe, params, overrides,
                               {str(k): str(v) for k, v in (entry.get("remappings") or {}
                                                            ).items()}))
    vis = None
    if data.get("visualization"):
        v = data["visualization"]
        check_keys(v, ("urdf", "joint_states", "ghost_joint_states"),
                   ("urdf", "joint_states", "ghost_joint_states"), f"{where}.visualization")
        if not (share_dir() / v["urdf"]).exists():
            raise ConfigError(f"{where}.visualization: {v['urdf']} not found")
        vis = Visualization(str(v["urdf"]), str(v["joint_states"]), str(v["ghost_joint_states"]))
    bag_play = bool(data.get("bag_play", False))
    bag_topics = tuple(str(t) for t in data.get("bag_topics") or ())
    if bag_play and not bag_topics:
        raise ConfigError(f"{where}: bag_play needs bag_topics (the inputs to play; playing "
                          "the recorded outputs too would mix them with the live ones)")
    rviz = str(data.get("rviz", "config/aloha.rviz"))
    if not (share_dir() / rviz).exists():
        raise ConfigError(f"{where}: rviz config {rviz} not found")
    hardware = None
    if data.get("hardware"):
        h = data["hardware"]
        w = f"{where}.hardware"
        check_keys(h, ("package", "launch", "switch", "arguments"),
                   ("package", "launch", "switch"), w)
        args = {str(k): str(v) for k, v in (h.get("arguments") or {}).items()}
        for key, value in args.items():
            m = ARG_RE.match(value)
            if m and m.group(1) not in arguments:
                raise ConfigError(f"{w}: argument '{key}' uses undeclared argument "
                                  f"'{m.group(1)}'")
        hardware = HardwareLaunch(str(h["package"]), str(h["launch"]), str(h["switch"]), args)
    return Bringup(name, str(data["description"]), arguments, tuple(nodes), vis, bag_play,
                   bag_topics, rviz, hardware)


def available_bringups() -> list[str]:
    return sorted(p.stem for p in (share_dir() / "config" / "bringup").glob("*.yaml"))


def node_class(executable: str):
    entry = EXECUTABLES[executable]
    return getattr(importlib.import_module(entry.module), entry.node)


def _ros_args(entry: NodeEntry) -> list[str]:
    """--ros-args of a node as ros2 launch starts it: its params files and remappings."""
    cli = ["--ros-args"]
    for p in entry.parameters:
        cli += ["--params-file", str(share_dir() / p)]
    for src, dst in entry.remappings.items():
        if src.startswith("~/"):  # private names: every node here is named as its executable
            src = f"/{entry.executable}/{src[2:]}"
        cli += ["-r", f"{src}:={dst}"]
    return cli


def create_node(entry: NodeEntry, extra_overrides: Mapping[str, Any] | None = None):
    """Instantiate one node as ros2 launch would start it (params files, -p, -r)."""
    from rclpy.parameter import Parameter

    cls = node_class(entry.executable)
    overrides = {**entry.overrides, **(extra_overrides or {})}
    params = [Parameter(k, value=v) for k, v in overrides.items()]
    return cls(cli_args=_ros_args(entry), parameter_overrides=params)


def process_command(entry: NodeEntry, overrides_file: Path,
                    extra_overrides: Mapping[str, Any] | None = None) -> list[str]:
    """The command line that starts one node as its own process, as ros2 launch would; the
    overrides go to ``overrides_file`` (a params file written here)."""
    import sys

    overrides = {**entry.overrides, **(extra_overrides or {})}
    overrides_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": overrides}}))
    module = EXECUTABLES[entry.executable].module
    return [sys.executable, "-m", module, *_ros_args(entry), "--params-file",
            str(overrides_file)]


def run(name: str, values: Mapping[str, str] | None = None) -> None:
    """`qwen-vla-ros bringup NAME arg:=value ...`: all nodes in one process, each spun by its
    own single-threaded executor on its own thread: nodes do not wait for each other, and each
    node's callbacks stay on one thread (a simulator's EGL context is bound to the thread that
    made it current; a shared multi-threaded executor moves callbacks between threads and
    rendering fails with EGL_BAD_ACCESS). SIGINT or SIGTERM stops it cleanly (exit 0)."""
    import os
    import signal
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(share_dir() / FAST_DDS_PROFILE))
    entries = load_bringup(name).resolve(values)
    stop = threading.Event()
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    nodes, executors, threads = [], [], []

    def spin(ex) -> None:
        while not stop.is_set() and rclpy.ok():
            ex.spin_once(timeout_sec=0.1)

    try:
        for e in entries:
            nodes.append(create_node(e))
            executors.append(SingleThreadedExecutor())
            executors[-1].add_node(nodes[-1])
            threads.append(threading.Thread(target=spin, args=(executors[-1],),
                                            name=e.executable, daemon=True))
            threads[-1].start()
        while not stop.is_set() and all(t.is_alive() for t in threads):
            stop.wait(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for ex in executors:
            ex.shutdown()
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def node_params(executable: str) -> type:
    """The parameters dataclass of ``executable``."""
    if executable not in EXECUTABLES:
        raise ConfigError(f"unknown node '{executable}'; known: {sorted(EXECUTABLES)}")
    module, name = EXECUTABLES[executable].params.split(":")
    return getattr(importlib.import_module(module), name)
