"""ros2 launch qwen_vla_ros vln_sim.launch.py [arg:=value ...]

Arguments and nodes: config/bringup/vln_sim.yaml. The same nodes without launch_ros:
qwen-vla-ros bringup vln_sim [arg:=value ...]."""

from qwen_vla_ros.launch_support import generate


def generate_launch_description():
    return generate("vln_sim")
