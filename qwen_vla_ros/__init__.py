"""qwen_vla_ros: deploy a Qwen-VLA-style vision-language-action policy on ROS 2 robots."""

__version__ = "0.1.0"
