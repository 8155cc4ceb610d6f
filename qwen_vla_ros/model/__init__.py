"""Policy model (torch + transformers only; never imports rclpy).

Names are loaded on first use, so ``qwen_vla_ros.model.types`` (numpy only) can be imported
without torch."""

from __future__ import annotations

import importlib

__all__ = ["ActionChunk", "Observation", "PolicyConfig", "QwenVLAPolicy"]
_WHERE = {"ActionChunk": "types", "Observation": "types", "PolicyConfig": "policy",
          "QwenVLAPolicy": "policy"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"qwen_vla_ros.model.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
