"""ros2 launch qwen_vla_ros vln.launch.py [arg:=value ...]

Arguments and nodes: config/bringup/vln.yaml. The same nodes without launch_ros:
qwen-vla-ros bringup vln [arg:=value ...]."""

from qwen_vla_ros.launch_support import generate


def generate_launch_description():
    return generate("vln")
