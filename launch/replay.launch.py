"""ros2 launch qwen_vla_ros replay.launch.py bag:=BAG checkpoint:=DIR

Arguments and nodes: config/bringup/replay.yaml. The same nodes without launch_ros:
qwen-vla-ros bringup replay [arg:=value ...] (play the bag separately)."""

from qwen_vla_ros.launch_support import generate


def generate_launch_description():
    return generate("replay")
