"""What every node that hosts the policy does the same way (policy_node, navigation_node):
load the checkpoint, size torch's thread pool, run inference off the executor, publish a chunk
with its observation record, decode camera frames, tell the clock's time, and warn without
flooding the log."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from qwen_vla_ros.errors import QwenVLAError
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.conversions import (
    ImageConversionError,
    chunk_to_trajectory,
    msg_to_rgb,
    sec_to_stamp,
    stamp_to_sec,
)
from qwen_vla_ros.runtime.inference import InferenceWorker, LatencyStats
from qwen_vla_ros.runtime.policy_loop import Request, stamp_or


def load_checkpoint(path: str, device: str, dtype: str, logger):
    """The policy in ``path``; a clear error when the parameter was left empty."""
    from qwen_vla_ros.model.policy import QwenVLAPolicy

    if not path:
        raise ValueError("parameter 'checkpoint' is empty (make one with "
                         "`qwen-vla-ros checkpoint tiny DIR`)")
    check_device(device)
    logger.info(f"loading policy from {path}")
    return QwenVLAPolicy.from_pretrained(path, device=device, dtype=dtype)


def open_policy(policy, params, embodiment: str, logger):
    """``policy`` (a test's, already built) or the checkpoint ``params`` name, with torch's
    threads sized from ``params.torch_threads``; an error when it lacks ``embodiment``.
    Compiled when ``params.compile`` says so (policy_node; see ``compile_policy``)."""
    set_torch_threads(params.torch_threads)
    if policy is None:
        policy = load_checkpoint(params.checkpoint, params.device, params.dtype, logger)
    policy.require_trained(embodiment)  # known to the checkpoint, and trained if it was
    if getattr(params, "compile", "off") != "off":
        compile_policy(policy, params.compile, params.compile_mode, params.compile_cache_dir,
                       logger)
    return policy


def open_policy_or_none(policy, params, embodiment: str, logger) -> tuple[Any, str]:
    """``open_policy``, or (None, why) when it fails (a checkpoint that is missing, broken
    or lacks ``embodiment``): for a node that stays up and holds without a policy."""
    try:
        return open_policy(policy, params, embodiment, logger), ""
    except (ValueError, QwenVLAError, OSError) as exc:
        return None, f"no policy: {exc}"


def compile_policy(policy, when: str, mode: str, cache_dir: str, logger) -> bool:
    """``policy.compile_for_inference`` for ``when`` = on, or auto on a CUDA device; the
    kernels cached in ``cache_dir`` when given. Compiling happens at the first chunks of each
    layout; a failure then falls back to eager and is logged (never a crash)."""
    import os

    if when == "off" or (when == "auto" and policy.device.type != "cuda"):
        return False
    if cache_dir:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    logger.info(f"compiling the policy (mode {mode or 'default'}"
                f"{', cache ' + cache_dir if cache_dir else ''}): the first chunk of each "
                "camera layout takes longer")
    policy.compile_for_inference(mode=mode or None, log=logger.error)
    return True


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


def publish_chunk(chunk_pub, info_pub, names, chunk, request, steps: int,
                  tag: str = "") -> None:
    """``chunk`` as a JointTrajectory stamped with its observation time (``tag``, a
    ``ChunkTag``'s text, in header.frame_id), then the request's record (std_msgs/String,
    JSON) on ``info_pub``."""
    from builtin_interfaces.msg import Duration, Time
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    chunk_pub.publish(chunk_to_trajectory(chunk.actions, names, chunk.dt, JointTrajectory,
                                          JointTrajectoryPoint, Duration,
                                          stamp=sec_to_stamp(chunk.stamp, Time), frame_id=tag))
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


def guarded(fn: Callable[..., None], on_error: Callable[[str, str], None]
            ) -> Callable[..., None]:
    """``fn`` for a timer or subscription: an exception is passed to ``on_error(key, text)``
    instead of propagating (a callback that raises stops the executor)."""
    def tick(*args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            on_error(f"tick:{fn.__name__}", f"{fn.__name__} failed: {type(exc).__name__}: {exc}")
    return tick


def free_accelerator_memory() -> None:
    """Return a released model's memory to the device (CUDA keeps it cached otherwise)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


class PolicyHost:
    """The policy inside a node: its chunk and observation-record publishers, the inference
    worker (the model runs off the executor; ``on_chunk(request, chunk)`` is called on the
    worker's thread), latency and chunk counts, and camera subscriptions that decode frames.
    A rejected frame or failed inference is logged (throttled) and passed to ``report`` (the
    node's status line).
    ``release()`` stops the worker and destroys what it created (a lifecycle cleanup)."""

    def __init__(self, node, names: list[str], steps: int,
                 on_chunk: Callable[[Request, Any], None],
                 report: Callable[[str], None] | None = None) -> None:
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        self.node, self.names, self.steps = node, names, steps
        self.policy = None
        self.warn = ThrottledWarning(node.get_logger())
        self.latency = LatencyStats()
        self.published = 0
        self._times: deque[float] = deque()
        self.entities: list = [
            node.create_publisher(JointTrajectory, "~/action_chunk", qos.COMMAND),
            node.create_publisher(String, "~/observation_info", qos.COMMAND)]
        self.worker = InferenceWorker(self._infer, on_chunk, self._on_error)
        self._report = report
        self.added_latency = 0.0  # s (policy_node's added_latency_ms)
        self.on_failure: Callable[[], None] | None = None  # after a failed inference
        self.on_input: Callable[[], None] | None = None  # after each frame or joint state

    def _infer(self, request: Request):
        chunk = self.policy.predict(request.observation, seed=request.seed, steps=self.steps,
                                    prefix=request.prefix, guide=request.guide)
        if self.added_latency > 0:  # a drill: a slower model, in the node's (sim) time
            until = clock_now(self.node) + self.added_latency
            while clock_now(self.node) < until and self.worker.running:
                time.sleep(0.001)
        return chunk

    def _on_error(self, request, exc: BaseException) -> None:
        expected = isinstance(exc, (QwenVLAError, ValueError, KeyError))
        text = f"inference failed: {type(exc).__name__}: {exc}"
        log = self.node.get_logger()
        (log.warning if expected else log.error)(text)
        if self._report is not None:
            self._report(text)
        if self.on_failure is not None:
            self.on_failure()

    def publish(self, request: Request, chunk, tag: str = "") -> None:
        """The chunk (stamped with its observation time, ``tag`` in its frame_id) and then
        its observation record."""
        self.latency.add(chunk.timing_ms.get("total", 0.0))
        publish_chunk(self.entities[0], self.entities[1], self.names, chunk, request,
                      self.steps, tag)
        self.published += 1
        self._times.append(time.monotonic())

    def chunk_rate(self, window: float = 5.0) -> float:
        """Chunks per second over the last ``window`` seconds (monotonic)."""
        t = time.monotonic()
        while self._times and t - self._times[0] > window:
            self._times.popleft()
        return len(self._times) / window

    def diagnostic_values(self) -> dict[str, Any]:
        """The figures both policy-running nodes put on /diagnostics."""
        return {"inference_ms_p50": self.latency.percentile(50),
                "inference_ms_p99": self.latency.percentile(99),
                "chunk_rate_hz": self.chunk_rate(), "chunks_published": self.published,
                "requests_dropped": self.worker.dropped}

    def subscribe_observation(self, loop, profile, on_rejected: Callable[[str, str], None]
                              ) -> None:
        """policy_node's inputs into ``loop`` (a ``PolicyLoop``): every camera slot of its
        embodiment (parameters ``camera_topics.<slot>``, ``camera_compressed.<slot>``) and
        every robot's joint states (``joint_state_topics.<robot>``), defaults from the robot
        ``profile`` (or the embodiment's). A rejected joint state goes to
        ``on_rejected(key, text)``."""
        from sensor_msgs.msg import JointState

        from qwen_vla_ros.embodiment.robot_profile import input_topics
        from qwen_vla_ros.ros.params import keyed

        node, spec = self.node, loop.spec
        cams, joints = input_topics(spec, loop.merger.robots(), profile)
        what = f"cameras the policy sees on '{spec.name}'"  # a checkpoint may see a subset
        for cam, default in cams.items():
            topic = keyed(node, "camera_topics", cam, default, f"topic of camera slot '{cam}'",
                          cams, what)
            compressed = keyed(node, "camera_compressed", cam, False,
                               f"'{cam}' is sensor_msgs/CompressedImage", cams, what)
            self.subscribe_camera(topic, compressed, cam,
                                  lambda rgb, t, cam=cam: loop.add_image(cam, rgb, t))

        def joint_cb(robot: str) -> Callable:
            def cb(msg) -> None:
                reason = loop.add_joint_state(robot, msg.name, msg.position, stamp_or(
                    stamp_to_sec(msg.header.stamp), clock_now(node)))
                if reason:
                    on_rejected(f"js:{robot}", f"joint state rejected: {reason}")
                elif self.on_input is not None:
                    self.on_input()
            return cb

        for robot in loop.merger.robots():
            key = robot or "robot"
            topic = keyed(node, "joint_state_topics", key, joints[key],
                          f"JointState topic of '{key}'", joints, f"robots of '{spec.name}'")
            self.entities.append(node.create_subscription(JointState, topic, joint_cb(robot),
                                                          qos.SENSOR))

    def subscribe_camera(self, topic: str, compressed: bool, label: str,
                         sink: Callable[[Any, float], None]) -> None:
        """Decode each frame to RGB and hand it with its stamp (the clock's time when the
        header has none) to ``sink``; a frame that cannot be decoded is logged and dropped."""
        from sensor_msgs.msg import CompressedImage, Image

        def cb(msg) -> None:
            try:
                rgb = msg_to_rgb(msg, compressed)
            except ImageConversionError as exc:
                text = f"camera '{label}': frame rejected: {exc}"
                self.warn(f"img:{label}", text)
                if self._report is not None:
                    self._report(text)
                return
            sink(rgb, stamp_or(stamp_to_sec(msg.header.stamp), clock_now(self.node)))
            if self.on_input is not None:
                self.on_input()

        self.entities.append(self.node.create_subscription(
            CompressedImage if compressed else Image, topic, cb, qos.SENSOR))

    def release(self, keep=None) -> None:
        """Stop inferring, destroy the host's entities and drop the policy, freeing its
        accelerator memory, unless it is ``keep`` (one the node was handed, a test's)."""
        from rclpy.publisher import Publisher
        from rclpy.subscription import Subscription
        from rclpy.timer import Timer

        self.worker.stop()
        for entity in self.entities:
            if isinstance(entity, Subscription):
                self.node.destroy_subscription(entity)
            elif isinstance(entity, Timer):
                self.node.destroy_timer(entity)
            elif isinstance(entity, Publisher):
                self.node.destroy_publisher(entity)
        self.entities = []
        policy, self.policy = self.policy, None
        if policy is not None and policy is not keep:
            del policy
            free_accelerator_memory()
