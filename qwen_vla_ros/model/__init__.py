"""Policy model (torch + transformers only; never imports rclpy)."""

from qwen_vla_ros.model.policy import ActionChunk, Observation, PolicyConfig, QwenVLAPolicy

__all__ = ["ActionChunk", "Observation", "PolicyConfig", "QwenVLAPolicy"]
