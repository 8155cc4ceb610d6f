"""What the policy node does at each inference tick, without ROS.

``PolicyLoop`` owns the observation state (joint-state merger, latest camera frames,
instruction), the staleness rules, the seed sequence and the committed schedule used for RTC
prefixes. The live ``policy_node`` feeds it from subscriptions and a timer; offline replay
(``qwen_vla_ros.replay``) feeds it from a bag. Both therefore build each observation with the
same code, and a replay given the same inputs and seed reproduces the live chunk.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.model.types import ActionChunk, Observation
from qwen_vla_ros.params import at_least, one_of, param, positive, validate
from qwen_vla_ros.runtime.executor import Chunk, ChunkExecutor, ChunkTag, RejectedChunk
from qwen_vla_ros.runtime.inference import DelayEstimator, LatencyStats
from qwen_vla_ros.runtime.limits import Limits
from qwen_vla_ros.runtime.observation import (
    FrameHistory,
    ImageBuffer,
    JointStateMerger,
    Rejection,
    history_label,
)
from qwen_vla_ros.runtime.pacing import TIME_EPS


@dataclass
class PolicyParams:
    """policy_node's parameters (declared from this list; read and validated at configure).
    Per-camera and per-arm topics (``camera_topics.<cam>``, ``camera_compressed.<cam>``,
    ``joint_state_topics.<robot>``) depend on the embodiment and are declared then."""

    checkpoint: str = param("", "policy checkpoint directory (qwen-vla-ros checkpoint ...)")
    embodiment: str = param("aloha", "embodiment name (config/embodiments/NAME.yaml)")
    robot_profile: str = param("", "config/robots/NAME.yaml: default camera and joint-state "
                                   "topics of a real rig (empty: <camera>/image_raw)")
    device: str = param("cpu", "torch device: cpu, cuda, cuda:1")
    dtype: str = param("float32", "float32 or bfloat16")
    instruction: str = param("", "language instruction; also settable on ~/instruction")
    inference_rate_hz: float = param(5.0, "how often a new chunk is requested", check=positive)
    max_observation_age: float = param(0.2, "s; older camera/joint data -> no inference",
                                       check=positive)
    flow_steps: int = param(10, "Euler steps per chunk", check=at_least(1))
    seed: int = param(0, "base seed; chunk i since the node was activated uses seed + i "
                         "(noise: per_chunk)")
    noise: str = param("per_chunk", "per_chunk: chunk i samples from seed + i; fixed: every "
                                     "chunk from seed, so consecutive chunks of similar "
                                     "observations agree", check=one_of("per_chunk", "fixed"))
    rtc_prefix_steps: int = param(
        0, "committed steps passed as prefix for real-time chunking: 0 off, N fixed, -1 the "
           "measured delay (p90 of observation-to-publication over the last 20 chunks, in "
           "control steps, plus 2; it rises at once and falls after 10 lower estimates in a row); "
           "adapters run blend: rtc to follow it", check=at_least(-1))
    rtc_soft_steps: int = param(
        0, "with an RTC prefix: how many steps after it are guided softly toward what the "
           "previous chunk planned (weights decaying 1 -> 0, model.flow.soft_weights): 0 off "
           "(a hard junction after the prefix), N at most N steps, -1 all it planned",
        check=at_least(-1))
    added_latency_ms: float = param(
        0.0, "drill/benchmark: extra latency (ms of the node's clock) after each inference, "
             "before its chunk is published (bench/latency.py)", check=at_least(0.0))
    pace_sim: bool = param(
        False, "benchmark: pace the simulator (aloha_sim pace_timeout_s > 0) -- it runs only "
               "as far as this node grants on /sim_pace, a chunk is published exactly "
               "added_latency_ms of sim time after its request and the model's own time does "
               "not count (runtime/pacing.py); requests every 1/inference_rate_hz at most. "
               "Never on a real robot")
    compile: str = param("auto", "torch.compile the flow loop and language model: auto (on "
                                 "for CUDA), on, off; a failure falls back to eager, logged",
                         check=one_of("auto", "on", "off"))
    compile_mode: str = param("reduce-overhead", "torch.compile mode (reduce-overhead: CUDA "
                                                 "graphs; default: '')")
    compile_cache_dir: str = param("", "compiled-kernel cache (TORCHINDUCTOR_CACHE_DIR); empty: "
                                       "torch's default. A warm cache shortens start-up")
    torch_threads: int = param(0, "CPU threads for torch (0 = torch default); on a small CPU "
                                  "leave cores for DDS and the executor", check=at_least(0))
    autostart: bool = param(True, "configure and activate at start-up")

    def __post_init__(self) -> None:
        validate(self)


def stamp_or(stamp: float, now: float) -> float:
    """A header stamp, or ``now`` for publishers that leave it zero."""
    return stamp if stamp > 0 else now


@dataclass
class Request:
    """One inference request: the observation and how it was made."""

    observation: Observation
    prefix: np.ndarray | None
    seed: int
    tick: float  # clock time at which the observation was assembled
    inputs: dict[str, float] = field(default_factory=dict)  # source -> stamp used

    @property
    def age(self) -> float:
        return self.tick - self.observation.stamp

    history_frames: int = 0
    history_period: float = 0.0
    delay_steps: int = 0  # the delay the prefix was chosen for (``ChunkTag.delay``)
    guide: np.ndarray | None = None  # the previous plan after the prefix (soft guidance)

    def info(self, steps: int) -> dict[str, Any]:
        """JSON-able record of this request (the node publishes it on ~/observation_info)."""
        return {"history_frames": self.history_frames, "history_period": self.history_period,
                "embodiment": self.observation.embodiment, "tick": self.tick,
                "stamp": self.observation.stamp, "seed": self.seed,
                "flow_steps": steps, "prefix_len": 0 if self.prefix is None else len(self.prefix),
                "delay_steps": self.delay_steps,
                "guide_len": 0 if self.guide is None else len(self.guide),
                "inputs": dict(self.inputs), "state": self.observation.state.tolist(),
                "instruction": self.observation.instruction}


class PolicyLoop:
    """Observation assembly, staleness, seeds and the committed schedule of one policy.
    ``request`` and ``accept`` may be called from different threads (a node's timer and its
    inference worker): they take one lock."""

    def __init__(self, spec: EmbodimentSpec, max_age: float, seed: int = 0,
                 prefix_steps: int = 0, soft_steps: int = 0, instruction: str = "",
                 history_frames: int = 0, history_period: float = 1.0,
                 fixed_noise: bool = False) -> None:
        if not max_age > 0:
            raise ValueError(f"max_observation_age must be > 0, got {max_age}")
        self.spec = spec
        self.max_age = float(max_age)
        self.seed = int(seed)
        self.fixed_noise = bool(fixed_noise)  # every chunk from the same noise (seed)
        self.prefix_steps = int(prefix_steps)
        if self.prefix_steps < -1:
            raise ValueError(f"prefix_steps must be >= -1, got {prefix_steps}")
        self.soft_steps = int(soft_steps)
        if self.soft_steps < -1:
            raise ValueError(f"soft_steps must be >= -1, got {soft_steps}")
        self.delay = DelayEstimator(spec.dt, spec.horizon)
        self.last_tag: ChunkTag | None = None  # of the last accepted chunk
        # (old, new) measured delay in steps when the last accepted chunk changed it (RTC
        # prefix from measurement, prefix_steps -1), else None
        self.delay_change: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.instruction = instruction.strip()
        self.merger = JointStateMerger(spec)
        self.images = ImageBuffer(spec.cameras)
        self.schedule = ChunkExecutor(Limits.from_spec(spec), spec.dt, mode="rtc")
        self.accepted = 0  # chunks accepted so far (each chunk's id)
        self.run_start = 0  # ``accepted`` at the last restart: chunk i of a run samples seed + i
        self.started = -math.inf  # clock at the last restart; older requests are dropped
        self.instructions_ignored = 0  # empty instructions refused (the previous one stays)
        self.blind_since: float | None = None  # since when every request was rejected
        self.obs_age = LatencyStats()  # ms between an observation and its request
        # Past frames of the first camera (VLN looks back), sampled by time.
        self.history = (FrameHistory(spec.cameras[0], history_frames, history_period)
                        if history_frames > 0 and spec.cameras else None)

    @classmethod
    def from_params(cls, spec: EmbodimentSpec, params: PolicyParams) -> PolicyLoop:
        return cls(spec, params.max_observation_age, seed=params.seed,
                   prefix_steps=params.rtc_prefix_steps, soft_steps=params.rtc_soft_steps,
                   instruction=params.instruction,
                   fixed_noise=params.noise == "fixed")

    # ---- inputs -------------------------------------------------------------------------
    def add_image(self, camera: str, rgb: np.ndarray, stamp: float) -> None:
        self.images.put(camera, rgb, stamp)
        if self.history is not None and camera == self.history.camera:
            self.history.put(rgb, stamp)

    def add_joint_state(self, robot: str, names, positions, stamp: float) -> str | None:
        """Returns a rejection reason, or None if accepted."""
        return self.merger.update(robot, list(names), list(positions), stamp)

    def set_instruction(self, text: str) -> str | None:
        if not text.strip():
            self.instructions_ignored += 1
            return "empty instruction ignored; keeping the previous one"
        self.instruction = text.strip()
        return None

    def restart(self, now: float) -> None:
        """A new run from clock ``now`` (policy_node: each activation; a paced
        navigation_node: each POLICY run): no committed plan (the adapter engages from the
        measured pose), chunk seeds from ``seed`` again, no past frames (the latest one begins
        the history), and answers to requests made before ``now`` dropped. The measured delay
        and the latest inputs stay: they describe the machine and the robot, not the run."""
        with self._lock:
            self.schedule.reset(None)
            self.run_start, self.started = self.accepted, now
            self.last_tag, self.delay_change, self.blind_since = None, None, None
            if self.history is not None:
                self.history.clear()
                latest = self.images.latest(self.history.camera)
                if latest is not None:
                    self.history.put(*latest)

    def before_restart(self, request: Request) -> bool:
        """``request`` was made before the last restart (its answer belongs to no run)."""
        return request.tick < self.started - TIME_EPS

    # ---- ticks --------------------------------------------------------------------------
    def request(self, now: float) -> Request | Rejection:
        """The observation at clock time ``now``, or why there is none (then ``blind_since``
        says since when no request has been possible)."""
        with self._lock:
            request = self._request(now)
        if isinstance(request, Rejection):
            self.blind_since = now if self.blind_since is None else self.blind_since
            return request
        self.blind_since = None
        self.obs_age.add(request.age * 1e3)
        return request

    def awaiting(self, now: float, eps: float = TIME_EPS) -> list[str]:
        """Inputs a paced sim published for clock ``now`` that have not arrived yet (its
        clock may reach this node before its frames and joint states): each robot's joint
        state stamped ``now`` (the sim publishes them every step) and each camera's frame due
        by ``now`` at its rate. A request made before they arrive would see the step before;
        paced requests wait for them (runtime/pacing.py). Stale inputs are not waited for:
        the request then says why it cannot be made."""
        with self._lock:
            late = [f"joint_states:{r or 'robot'}" for r, t in self.merger.stamps().items()
                    if t < now - eps and now - t <= self.max_age]
            return late + self.images.due(now, self.max_age, eps)

    def blind(self, now: float, grace: float = 0.5) -> bool:
        """Every request rejected for longer than ``grace`` seconds."""
        return self.blind_since is not None and now - self.blind_since > grace

    def _request(self, now: float) -> Request | Rejection:
        if not self.instruction:
            return Rejection("no instruction yet: not inferring")
        images = self.images.images(now, self.max_age)
        if isinstance(images, Rejection):
            return Rejection(f"not inferring: {images}")
        state = self.merger.state(now, self.max_age)
        if isinstance(state, Rejection):
            return Rejection(f"not inferring: {state}")
        stamp = min(self.images.oldest_stamp(), self.merger.oldest_stamp())
        delay = self.delay.steps if self.prefix_steps < 0 else self.prefix_steps
        prefix = self.schedule.committed(stamp, delay) if delay > 0 else None
        guide = None
        if prefix is not None and self.soft_steps != 0:
            rest = self.spec.horizon - delay
            count = rest if self.soft_steps < 0 else min(rest, self.soft_steps)
            plan = self.schedule.plan_ahead(stamp + delay * self.spec.dt, count)
            guide = plan if len(plan) else None
        history: tuple = ()
        inputs = {**self.images.stamps(), **{f"joint_states:{r or 'robot'}": s
                                              for r, s in self.merger.stamps().items()}}
        if self.history is not None:
            cam = self.history.camera
            current = self.images.stamps()[cam]
            past = self.history.frames(current)
            history = tuple((history_label(cam, current - t), im) for t, im in past)
            inputs.update({f"history:{cam}:{k}": t for k, (t, _) in enumerate(past)})
        obs = Observation(images=dict(images), state=state, instruction=self.instruction,
                          embodiment=self.spec.name, stamp=stamp, history=history)
        h = self.history
        seed = self.seed if self.fixed_noise else self.seed + self.accepted - self.run_start
        return Request(obs, prefix, seed, now, inputs,
                       h.length if h else 0, h.period if h else 0.0, delay, guide)

    def accept(self, request: Request, chunk: ActionChunk, now: float | None = None
               ) -> str | None:
        """Take the model's answer to ``request``; returns why it was dropped, or None.
        ``now`` (the clock when it is published) feeds the delay estimate (``delay_change``
        says when it moved). The accepted chunk's tag (``last_tag``) goes out with it: the
        adapter checks its prefix against the same schedule this loop keeps."""
        if not np.all(np.isfinite(chunk.actions)):
            return "model output contains NaN/inf: chunk dropped"
        if self.before_restart(request):
            return (f"chunk for the request at {request.tick:.3f} s dropped: from before the "
                    f"restart at {self.started:.3f} s")
        prefix_len = 0 if request.prefix is None else len(request.prefix)
        with self._lock:
            try:
                self.schedule.add_chunk(Chunk(chunk.actions, chunk.stamp, chunk.dt,
                                              prefix_len, self.accepted))
            except RejectedChunk as exc:
                return f"chunk rejected: {exc}"
            self.last_tag = ChunkTag(self.accepted, prefix_len, request.delay_steps, now)
            self.accepted += 1
            before, self.delay_change = self.delay.steps, None
            if now is not None and self.delay.add(now - chunk.stamp) and self.prefix_steps < 0:
                self.delay_change = (before, self.delay.steps)
        return None
