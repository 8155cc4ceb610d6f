"""What every node that hosts the policy does the same way (policy_node, navigation_node):
load the checkpoint, size torch's thread pool, publish a chunk with its observation record,
tell the clock's time, and warn without flooding the log."""

from __future__ import annotations

import json
import time

from qwen_vla_ros.ros.conversions import chunk_to_trajectory, sec_to_stamp


def load_checkpoint(path: str, device: str, dtype: str, logger):
    """The policy in ``path``; a clear error when the parameter was left empty."""
    from qwen_vla_ros.model.policy import QwenVLAPolicy

    if not path:
        raise ValueError("parameter 'checkpoint' is empty (make one with "
                         "`qwen-vla-ros checkpoint tiny DIR`)")
    check_device(device)
    logger.info(f"loading policy from {path}")
    return QwenVLAPolicy.from_pretrained(path, device=device, dtype=dtype)


def check_device(device: str) -> None:
    """A clear error, naming the parameter, for a torch device this machine does not have."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"parameter 'device' is {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"parameter 'device' is {device!r} but torch sees no CUDA device on "
                         f"this machine (torch {torch.__version__}); set device:=cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"parameter 'device' is {device!r} but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")


def set_torch_threads(threads: int) -> None:
    """0 keeps torch's default; on a small CPU leave cores for DDS and the executor."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def publish_chunk(chunk_pub, info_pub, names, chunk, request, steps: int) -> None:
    """``chunk`` as a JointTrajectory stamped with its observation time, then the
    request's record (std_msgs/String, JSON) on ``info_pub``."""
    from builtin_interfaces.msg import Duration, Time
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    chunk_pub.publish(chunk_to_trajectory(chunk.actions, names, chunk.dt, JointTrajectory,
                                          JointTrajectoryPoint, Duration,
                                          stamp=sec_to_stamp(chunk.stamp, Time)))
    info_pub.publish(String(data=json.dumps(request.info(steps))))


def clock_now(node) -> float:
    """The node's clock (sim time under use_sim_time) in seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


class ThrottledWarning:
    """Log a warning per key at most once per ``period`` s (monotonic)."""

    def __init__(self, logger) -> None:
        self.logger = logger
        self._last: dict[str, float] = {}

    def __call__(self, key: str, text: str, period: float = 2.0) -> None:
        t = time.monotonic()
        if t - self._last.get(key, -1e9) >= period:
            self._last[key] = t
            self.logger.warning(text)
