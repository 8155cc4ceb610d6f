"""Turn a bringup description into a ROS 2 LaunchDescription (needs launch / launch_ros,
which robot machines have from the ROS apt repositories). The launch files are one line each:
the description in config/bringup/ is the single source of truth (see bringup.py)."""

from __future__ import annotations

import re

from qwen_vla_ros.bringup import ARG_RE, FAST_DDS_PROFILE, load_bringup
from qwen_vla_ros.paths import share_dir


def generate(name: str, rviz: bool = True):
    from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    desc = load_bringup(name)
    share = share_dir()
    actions: list = [SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE",
                                            str(share / FAST_DDS_PROFILE))]
    for arg, a in desc.arguments.items():
        actions.append(DeclareLaunchArgument(arg, default_value=a.default,
                                             description=a.description))
    for entry in desc.nodes:
        overrides = {}
        for key, value in entry.overrides.items():
            m = ARG_RE.match(str(value))
            overrides[key] = LaunchConfiguration(m.group(1)) if m else value
        actions.append(Node(
            package="qwen_vla_ros", executable=entry.executable, name=entry.executable,
            parameters=[*(str(share / p) for p in entry.parameters), overrides],
            remappings=list(entry.remappings.items()), output="screen"))
    if desc.visualization is not None:
        from launch.substitutions import Command
        from launch_ros.parameter_descriptions import ParameterValue

        v = desc.visualization
        xacro_path = str(share / v.urdf)
        for ns, prefix, topic in (("", "", v.joint_states), ("ghost", "ghost/",
                                                              v.ghost_joint_states)):
            urdf = ParameterValue(Command(["xacro ", xacro_path, f" prefix:={prefix}"]),
                                  value_type=str)
            actions.append(Node(package="robot_state_publisher",
                                executable="robot_state_publisher", namespace=ns,
                                parameters=[{"robot_description": urdf}],
                                remappings=[("joint_states", topic)]))
    if desc.bag_play:
        from launch.actions import ExecuteProcess
        from launch.conditions import IfCondition
        from launch.substitutions import PythonExpression

        actions.append(DeclareLaunchArgument("bag", default_value="",
                                             description="rosbag2 to play (its input topics)"))
        actions.append(DeclareLaunchArgument(
            "clock", default_value="true",
            description="ros2 bag play --clock (log time as /clock); false for bags that "
                        "recorded /clock themselves (sim-time stacks)"))
        bag, clock = LaunchConfiguration("bag"), LaunchConfiguration("clock")
        for with_clock in (True, False):
            cmd = ["ros2", "bag", "play", bag, "--topics", *desc.bag_topics]
            actions.append(ExecuteProcess(
                cmd=cmd + (["--clock"] if with_clock else []), output="screen",
                condition=IfCondition(PythonExpression([
                    "'", bag, "' != '' and '", clock, "'.lower() ",
                    "== 'true'" if with_clock else "!= 'true'"]))))
    if rviz:
        actions.append(DeclareLaunchArgument("rviz", default_value="true",
                                             description=f"start RViz with {desc.rviz}"))
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", str(share / desc.rviz)],
                            condition=IfCondition(LaunchConfiguration("rviz"))))
    return LaunchDescription(actions)


def bringup_name_of(launch_file_text: str) -> str | None:
    """The bringup a launch file generates (for the drift test)."""
    m = re.search(r'generate\(\s*"(\w+)"', launch_file_text)
    return m.group(1) if m else None
