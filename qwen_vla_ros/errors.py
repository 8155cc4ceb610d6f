"""Exceptions that name what is wrong, shared by the ROS-free core."""


class QwenVLAError(Exception):
    """Base class for errors raised by qwen_vla_ros."""


class ConfigError(QwenVLAError, ValueError):
    """A configuration file or dictionary is invalid (unknown key, bad value, missing field)."""


class CheckpointError(QwenVLAError):
    """A checkpoint directory is incomplete, corrupt or does not match its config."""


class MissingStatisticError(QwenVLAError, KeyError):
    """A normalisation statistic the policy needs is absent from the checkpoint."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""
