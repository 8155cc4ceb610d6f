"""Turn a bringup description into a ROS 2 LaunchDescription (needs launch / launch_ros,
which robot machines have from the ROS apt repositories). The launch files are one line each:
the description in config/bringup/ is the single source of truth (see bringup.py).

Everything that can fail (argument values, parameter files, the robot description expanded
from xacro, every package and executable a launch names) is evaluated in ONE OpaqueFunction
before any process starts, so a launch that cannot run stops with one clear error and leaves
nothing running. Other packages' processes (the hardware bringup, robot_state_publisher,
rviz2) are started before ours.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from qwen_vla_ros.bringup import ARG_RE, FAST_DDS_PROFILE, Bringup, load_bringup
from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.paths import PACKAGE, share_dir


def switches(desc: Bringup) -> dict[str, tuple[str, str]]:
    """The true/false launch arguments every launch file of ``desc`` adds:
    name -> (default, description)."""
    out: dict[str, tuple[str, str]] = {}
    if desc.hardware is not None:
        h = desc.hardware
        out[h.switch] = ("false", f"include {h.package}'s {h.launch} (the hardware drivers) "
                                  "before our nodes; false: start them yourself")
    if desc.visualization is not None:
        out["robot_state_publisher"] = ("true", "robot_state_publishers for the measured and "
                                                "the ghost robot (URDF expanded with xacro)")
    out["rviz"] = ("true", f"start RViz with {desc.rviz}")
    return out


def generate(name: str):
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable

    from launch import LaunchDescription

    desc = load_bringup(name)  # unknown keys, executables and missing files fail here
    actions: list = [SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE",
                                            str(share_dir() / FAST_DDS_PROFILE))]
    for arg, a in desc.arguments.items():
        actions.append(DeclareLaunchArgument(arg, default_value=a.default,
                                             description=a.description))
    for arg, (default, text) in switches(desc).items():
        actions.append(DeclareLaunchArgument(arg, default_value=default, description=text,
                                             choices=["true", "false"]))
    if desc.bag_play:
        actions.append(DeclareLaunchArgument("bag", default_value="",
                                             description="rosbag2 to play (its input topics)"))
        actions.append(DeclareLaunchArgument(
            "clock", default_value="true", choices=["true", "false"],
            description="ros2 bag play --clock (log time as /clock); false for bags that "
                        "recorded /clock themselves (sim-time stacks)"))
    actions.append(OpaqueFunction(function=_setup, args=[desc]))
    return LaunchDescription(actions)


def _setup(context, desc: Bringup) -> list:
    """All actions, from the arguments' values; raises ConfigError before anything starts."""
    from launch.actions import ExecuteProcess, IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_ros.actions import Node

    cfg = context.launch_configurations
    values = {k: cfg.get(k, a.default) for k, a in desc.arguments.items()}

    def on(arg: str) -> bool:
        return cfg.get(arg, switches(desc).get(arg, ("false",))[0]).lower() == "true"

    share = share_dir()
    first: list = []  # other packages' processes: a missing one fails before ours start
    if desc.hardware is not None and on(desc.hardware.switch):
        h = desc.hardware
        path = require_package(h.package, f"{h.switch}:=false") / "share" / h.package / h.launch
        if not path.exists():
            raise ConfigError(f"{h.switch}:=true: {path} does not exist (is {h.package} the "
                              "Interbotix/Trossen version this bringup expects?)")
        args = {k: values[m.group(1)] if (m := ARG_RE.match(v)) else v
                for k, v in h.arguments.items()}
        first.append(IncludeLaunchDescription(PythonLaunchDescriptionSource(str(path)),
                                              launch_arguments=list(args.items())))
    if desc.visualization is not None and on("robot_state_publisher"):
        require_package("robot_state_publisher", "robot_state_publisher:=false")
        v = desc.visualization
        for ns, prefix, topic in (("", "", v.joint_states),
                                  ("ghost", "ghost/", v.ghost_joint_states)):
            first.append(Node(package="robot_state_publisher",
                              executable="robot_state_publisher", namespace=ns,
                              parameters=[{"robot_description": expand_xacro(share / v.urdf,
                                                                             prefix)}],
                              remappings=[("joint_states", topic)]))
    if on("rviz"):
        require_package("rviz2", "rviz:=false")
        first.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                          arguments=["-d", str(share / desc.rviz)]))

    prefix = require_package(PACKAGE, "build this package with colcon and source its install "
                                      "space")
    ours = []
    for entry in desc.resolve(values):
        exe = prefix / "lib" / PACKAGE / entry.executable
        if not exe.exists():
            raise ConfigError(f"{exe} is missing: rebuild {PACKAGE} with colcon")
        ours.append(Node(
            package=PACKAGE, executable=entry.executable, name=entry.executable,
            parameters=[*(str(share / p) for p in entry.parameters), entry.overrides],
            remappings=list(entry.remappings.items()), output="screen"))

    last: list = []
    bag = cfg.get("bag", "") if desc.bag_play else ""
    if bag:
        if not Path(bag).exists():
            raise ConfigError(f"bag:={bag}: no such file or directory")
        if shutil.which("ros2") is None:
            raise ConfigError("bag:= needs `ros2 bag` (rosbag2) on PATH; without it use "
                              "`qwen-vla-ros play BAG` beside the launch")
        cmd = ["ros2", "bag", "play", bag, "--topics", *desc.bag_topics]
        last.append(ExecuteProcess(cmd=cmd + (["--clock"] if on("clock") else []),
                                   output="screen"))
    return first + ours + last


def require_package(package: str, instead: str) -> Path:
    """The install prefix of ``package``, or a ConfigError saying what to pass instead."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        return Path(get_package_prefix(package))
    except PackageNotFoundError:
        raise ConfigError(f"package '{package}' is not installed (not in AMENT_PREFIX_PATH); "
                          f"install it or pass {instead}") from None


def expand_xacro(path: Path, prefix: str = "") -> str:
    """The URDF text of a xacro file, expanded in this process (no `xacro` command, whose
    stderr warnings would fail launch's Command substitution)."""
    try:
        import xacro
    except ImportError:
        raise ConfigError("robot_state_publisher:=true needs the xacro Python package "
                          "(ros-<distro>-xacro); or pass robot_state_publisher:=false") from None
    try:
        return xacro.process_file(str(path), mappings={"prefix": prefix}).toxml()
    except Exception as exc:  # xacro raises its own and xml.dom errors
        raise ConfigError(f"{path}: xacro failed: {exc}") from exc


def bringup_name_of(launch_file_text: str) -> str | None:
    """The bringup a launch file generates (for the drift test)."""
    m = re.search(r'generate\(\s*"(\w+)"', launch_file_text)
    return m.group(1) if m else None
