"""Offline replay: run a checkpoint on a recorded bag, tick by tick, as the live node would.

Each inference tick goes through ``runtime.policy_loop.PolicyLoop`` -- the object the live
``policy_node`` uses -- fed with the bag's camera and joint-state messages through the same
conversion code (``ros.conversions.msg_to_rgb``). No ROS installation is needed.

Ticks ("--ticks"):
  recorded  the live node's own ticks, from ``<policy>/observation_info`` (recorded by the sim
            demo and by ``ros2 bag record`` with the topic set of docs/replay.md): the same
            tick time, the same input messages (found by stamp), seed and flow steps, so the
            replayed chunk reproduces the live one;
  rate      every 1/rate seconds of the bag's clock, inputs = the newest message logged
            before the tick (what a live node would have had, up to transport delay);
  auto      recorded when the bag has observation records, else rate.

Time: the bag's /clock when it has one (sim-time recordings), else the log time. Reported
times are on the bag's time axis (replay/clock.py): sim seconds when /clock was recorded, else
seconds since the bag's first message; ``time_base`` in the report says which. ``--start`` and
``--end`` are seconds since the bag's first message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.replay.bagio import BagError, BagReadError, BagSource, open_bag
from qwen_vla_ros.replay.bagwriter import ReplayBagWriter
from qwen_vla_ros.replay.clock import Clock
from qwen_vla_ros.replay.options import ReplayOptions
from qwen_vla_ros.replay.recorded import Recorded, decode_live_chunks, key_of, read_recorded
from qwen_vla_ros.ros.conversions import (
    ImageConversionError,
    msg_to_rgb,
    stamp_to_sec,
)
from qwen_vla_ros.runtime.observation import Rejection
from qwen_vla_ros.runtime.policy_loop import PolicyLoop, Request, stamp_or

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
LAG_S = 0.5  # a tick runs once the bag is this far past it (late-logged inputs still count)


@dataclass
class TickResult:
    tick: float  # clock time (s)
    t: float  # on the bag's time axis (Clock.axis_of_clock: sim s, or s since the start)
    seed: int | None = None
    stamp: float | None = None  # observation stamp (clock)
    age_ms: float | None = None
    actions: np.ndarray | None = None  # [H, D] embodiment units
    dt: float = 0.0
    infer_ms: float | None = None
    rejection: str | None = None
    recorded: bool = False  # tick taken from the live node's record
    inputs_match: bool | None = None  # recorded inputs all found by stamp
    live_diff: float | None = None  # max |replayed - live| over the chunk


@dataclass
class ReplayResult:
    source: BagSource
    options: ReplayOptions
    embodiment: str = ""
    ticks: list[TickResult] = field(default_factory=list)
    recorded: Recorded = field(default_factory=Recorded)
    errors: list[str] = field(default_factory=list)  # everything odd, for the report
    incomplete: list[str] = field(default_factory=list)  # why part of the bag was not replayed
    wall_s: float = 0.0
    span_s: float = 0.0  # bag seconds covered by the replayed ticks
    out_bag: Path | None = None
    report: dict[str, Any] = field(default_factory=dict)
    clock: Clock | None = None
    spec: Any = None

    @property
    def chunks(self) -> list[TickResult]:
        return [r for r in self.ticks if r.actions is not None]


# ---- the replay ---------------------------------------------------------------------------
class _Replayer:
    def __init__(self, opts: ReplayOptions, source: BagSource, store, policy, spec,
                 recorded: Recorded, result: ReplayResult, writer) -> None:
        self.opts, self.source, self.store, self.policy, self.spec = (opts, source, store,
                                                                      policy, spec)
        self.rec, self.result, self.writer = recorded, result, writer
        self.clock = Clock(recorded.clock_log, recorded.clock_s, source.start_ns)
        first = recorded.infos[0] if recorded.infos else {}
        hist_n = (opts.history_frames if opts.history_frames is not None
                  else int(first.get("history_frames", 0)))
        hist_p = (opts.history_period if opts.history_period is not None
                  else float(first.get("history_period") or 1.0))
        self.keep_s = 2.0 + hist_n * hist_p  # how much input history the replay holds
        self.loop = PolicyLoop(spec, opts.max_age, seed=opts.seed,
                               prefix_steps=opts.rtc_prefix_steps or 0,
                               soft_steps=opts.rtc_soft_steps or 0,
                               instruction=opts.instruction or "", history_frames=hist_n,
                               history_period=hist_p)
        self.sources: dict[str, tuple[str, str]] = {}  # topic -> (kind, name)
        for cam in spec.cameras:
            self.sources[opts.camera_topics.get(cam, f"/{cam}/image_raw")] = ("camera", cam)
        for robot in self.loop.merger.robots():
            key = robot or "robot"
            default = f"/{robot}/joint_states" if robot else "/joint_states"
            self.sources[opts.joint_state_topics.get(key, default)] = ("joints", robot)
        self.history: dict[str, deque] = {t: deque() for t in self.sources}
        self.fed: dict[str, int] = {}  # topic -> id of the entry last fed to the loop
        self.streamed: dict[str, int] = {}  # history camera: id of the last frame streamed

    # ---- checks -------------------------------------------------------------------------
    def check_topics(self) -> None:
        problems = []
        for topic, (kind, name) in self.sources.items():
            typ = self.source.topics.get(topic)
            want = (IMAGE, COMPRESSED) if kind == "camera" else (JOINT_STATE,)
            what = (f"camera '{name}'" if kind == "camera"
                    else f"joint states of '{name or 'robot'}'")
            if typ is None:
                problems.append(f"{topic} ({what}) is not in the bag")
            elif topic in self.source.unknown:
                problems.append(f"{topic} ({what}) has unknown type {typ}")
            elif typ not in want:
                problems.append(f"{topic} ({what}) has type {typ}, expected {' or '.join(want)}")
        if problems:
            raise BagError("cannot replay: " + "; ".join(problems) + ". Topics in the bag: "
                           + ", ".join(sorted(self.source.topics))
                           + ". Map topics with --camera-topic / --joint-state-topic.")

    # ---- ticks --------------------------------------------------------------------------
    def plan_ticks(self) -> list[tuple[float, dict[str, Any] | None]]:
        mode = self.opts.ticks
        if mode == "auto":
            mode = "recorded" if self.rec.infos else "rate"
        if mode == "recorded":
            if not self.rec.infos:
                raise BagError(f"--ticks recorded: the bag has no "
                               f"{self.opts.policy_ns}/observation_info records")
            ticks = [(float(i["tick"]), i) for i in self.rec.infos]
        else:
            if not self.opts.rate_hz > 0:
                raise ValueError(f"rate must be > 0, got {self.opts.rate_hz}")
            first = (self.clock.at(self.source.start_ns) if not self.clock.recorded
                     else float(self.rec.clock_s[0]))
            last = (self.clock.at(self.source.end_ns) if not self.clock.recorded
                    else float(self.rec.clock_s[-1]))
            period = 1.0 / self.opts.rate_hz
            n = math.floor((last - first) / period)
            ticks = [(first + k * period, None) for k in range(1, n + 1)]
        lo = -math.inf if self.opts.start is None else self.opts.start
        hi = math.inf if self.opts.end is None else self.opts.end
        return [(t, i) for t, i in ticks if lo <= self.clock.rel(t) <= hi]

    def run(self, progress: Callable[[int], None]) -> None:
        ticks = self.plan_ticks()
        if not (self.opts.instruction or self.rec.instructions
                or any(i.get("instruction") for i in self.rec.infos)):
            raise BagError(f"no instruction: the bag has neither {self.opts.policy_ns}/"
                           "instruction nor observation records; pass --instruction")
        if not self.opts.instruction and self.rec.infos:
            self.loop.set_instruction(self.rec.infos[0].get("instruction", ""))
        nxt = 0
        entry_id = 0
        try:
            for topic, log_ns, raw in self.source.messages(list(self.sources)):
                progress(1)
                c = self.clock.at(log_ns)
                if c is None:
                    continue  # before the first /clock: the nodes had no time yet
                while nxt < len(ticks) and ticks[nxt][0] + LAG_S < c:
                    self.tick(*ticks[nxt], ticks[nxt + 1][0] if nxt + 1 < len(ticks) else None)
                    nxt += 1
                try:
                    msg = self.store.deserialize_cdr(raw, self.source.topics[topic])
                except Exception as exc:  # one bad message: skip it, as a node would
                    self.result.errors.append(f"{topic}: undecodable message at "
                                              f"t={(log_ns - self.source.start_ns) * 1e-9:.3f}"
                                              f" s skipped ({type(exc).__name__})")
                    continue
                entry_id += 1
                hist = self.history[topic]
                hist.append((entry_id, c, msg))
                horizon = ticks[nxt][0] - self.keep_s if nxt < len(ticks) else c
                while len(hist) > 1 and hist[1][1] < horizon:
                    hist.popleft()
        except BagReadError as exc:
            self.result.errors.append(f"{exc} -- ticks after that point were not replayed")
            self.result.incomplete.append(str(exc))
            last = max((h[-1][1] for h in self.history.values() if h), default=-math.inf)
            ticks = [t for t in ticks if t[0] <= last]
        while nxt < len(ticks):
            self.tick(*ticks[nxt], ticks[nxt + 1][0] if nxt + 1 < len(ticks) else None)
            nxt += 1

    def _feed(self, topic: str, tick: float, want_stamp: float | None) -> bool | None:
        """Feed ``topic``'s input for ``tick``: the recorded one (by stamp) if given, else the
        newest logged by then. Returns whether the recorded input was found."""
        kind, name = self.sources[topic]
        hist = self.history[topic]
        if kind == "camera" and self.loop.history is not None \
                and name == self.loop.history.camera:
            self._stream_history(topic, name, tick)
        found = None
        if want_stamp is not None:
            for entry in hist:
                if abs(stamp_or(stamp_to_sec(entry[2].header.stamp), entry[1])
                       - want_stamp) < 1e-6:
                    found = [entry]
                    break
        candidates = found or [e for e in reversed(hist) if e[1] <= tick]
        for entry_id, c, msg in candidates:
            if self.fed.get(topic) == entry_id:
                break  # already in the loop's state
            stamp = stamp_or(stamp_to_sec(msg.header.stamp), c)
            if kind == "camera":
                try:
                    rgb = msg_to_rgb(msg, self.source.topics[topic] == COMPRESSED)
                except ImageConversionError as exc:
                    self.result.errors.append(f"camera '{name}': frame at {stamp:.3f} "
                                              f"rejected: {exc}")
                    continue  # live, the previous good frame stays; try the one before
                self.loop.add_image(name, rgb, stamp)
            else:
                reason = self.loop.add_joint_state(name, msg.name, msg.position, stamp)
                if reason:
                    self.result.errors.append(f"joint state rejected: {reason}")
            self.fed[topic] = entry_id
            break
        return None if want_stamp is None else found is not None

    def _stream_history(self, topic: str, name: str, tick: float) -> None:
        """The live node converts every frame of the history camera as it arrives and samples
        its history from that stream; so does the replay, up to the tick."""
        last = self.streamed.get(topic, 0)
        for entry_id, c, msg in self.history[topic]:
            if entry_id <= last or c > tick:
                continue
            stamp = stamp_or(stamp_to_sec(msg.header.stamp), c)
            try:
                rgb = msg_to_rgb(msg, self.source.topics[topic] == COMPRESSED)
            except ImageConversionError:
                continue  # reported when (if) it is selected as the current frame
            self.loop.add_image(name, rgb, stamp)
            self.streamed[topic] = self.fed[topic] = entry_id

    def tick(self, tick: float, info: dict[str, Any] | None, next_tick: float | None) -> None:
        res = TickResult(tick=tick, t=self.clock.axis_of_clock(tick), recorded=info is not None)
        # (live chunks are compared only on recorded ticks: elsewhere the seeds differ)
        steps = self.opts.flow_steps
        matches = []
        inputs = (info or {}).get("inputs", {})
        for topic, (kind, name) in self.sources.items():
            key = name if kind == "camera" else f"joint_states:{name or 'robot'}"
            matches.append(self._feed(topic, tick, inputs.get(key)))
        if not self.opts.instruction:  # as recorded: the last instruction sent before the tick
            log = self.clock.log_of(tick)
            for t_ns, text in self.rec.instructions:
                if t_ns <= log:
                    self.loop.set_instruction(text)
        if info is not None:
            res.inputs_match = all(m is not False for m in matches)
            if self.opts.rtc_prefix_steps is None:  # the delay the live node continued over
                self.loop.prefix_steps = int(info.get("delay_steps", 0))
            if self.opts.rtc_soft_steps is None:  # as many guided steps as the live node had
                self.loop.soft_steps = int(info.get("guide_len", 0))
            if info.get("instruction") and not self.opts.instruction:
                self.loop.set_instruction(info["instruction"])
        request = self.loop.request(tick)
        if isinstance(request, Rejection):
            res.rejection = str(request)
        else:
            if info is not None:
                request = dataclasses.replace(request, seed=int(info["seed"]))
                steps = int(info.get("flow_steps", steps))
            self._infer(request, steps, res)
        self.result.ticks.append(res)
        self._write_tick(res, request, steps, next_tick)

    def _infer(self, request: Request, steps: int, res: TickResult) -> None:
        res.seed, res.stamp, res.age_ms = request.seed, request.observation.stamp, \
            request.age * 1e3
        chunk = self.policy.predict(request.observation, seed=request.seed, steps=steps,
                                    prefix=request.prefix, guide=request.guide)
        res.infer_ms = chunk.timing_ms.get("total")
        reason = self.loop.accept(request, chunk)
        if reason:
            res.rejection = reason
            return
        res.actions, res.dt = np.asarray(chunk.actions, np.float64), chunk.dt
        live = self.rec.live_chunks.get(key_of(chunk.stamp)) if res.recorded else None
        if live is not None and live.shape == res.actions.shape:
            res.live_diff = float(np.max(np.abs(live - res.actions)))

    # ---- output bag ---------------------------------------------------------------------
    def _write_tick(self, res: TickResult, request, steps: int, next_tick: float | None) -> None:
        w = self.writer
        log = self.clock.log_of(res.tick)
        if res.rejection is not None:
            w.string("/replay/status", log, f"t={res.t:.3f} s: {res.rejection}")
            return
        w.trajectory("/replay/action_chunk", log, res.actions, self.spec.action_names, res.dt,
                     res.stamp)
        w.string("/replay/observation_info", log, json.dumps(request.info(steps)))
        end = next_tick if next_tick is not None else res.tick + 1.0 / self.opts.rate_hz
        lo, hi = self.spec.lower(), self.spec.upper()
        t = res.tick
        while t < end - 1e-9:
            planned, _ = self.loop.schedule.planned(t + self.opts.ghost_lookahead_s)
            if planned is not None:
                w.joint_state("/replay/predicted_joint_states", self.clock.log_of(t),
                              self.spec.action_names,
                              self.spec.to_robot_units(np.clip(planned, lo, hi)), t)
            t += 0.1


def _choose_embodiment(opts: ReplayOptions, policy, recorded: list[dict[str, Any]],
                       source: BagSource) -> str:
    if opts.embodiment:
        return opts.embodiment
    named = {i.get("embodiment") for i in recorded if i.get("embodiment")}
    if len(named) == 1:
        return named.pop()
    if len(policy.embodiments) == 1:
        return next(iter(policy.embodiments))
    # The embodiments whose cameras all appear in the bag under their default topics.
    fits = [name for name, spec in policy.embodiments.items()
            if spec.cameras and all(opts.camera_topics.get(c, f"/{c}/image_raw")
                                    in source.topics for c in spec.cameras)]
    if len(fits) == 1:
        return fits[0]
    raise BagError("cannot tell the embodiment: pass --embodiment (the checkpoint has "
                     f"{sorted(policy.embodiments)})")


def replay(opts: ReplayOptions, policy=None, log: Callable[[str], None] = print
           ) -> ReplayResult:
    """Replay ``opts`` end to end: output bag + report in ``opts.out``. Errors about the bag
    are collected in ``result.errors`` (what could be processed is kept); a bag that cannot be
    opened raises ``BagError``."""
    from qwen_vla_ros.replay.report import write_report

    source = open_bag(opts.bag)
    return _replay_source(source, opts, policy, log, write_report)


POLICY_NAMESPACES = ("/policy_node", "/navigation_node")


def detect_policy_ns(source: BagSource) -> str:
    """The node whose outputs the bag recorded: policy_node (manipulation) or
    navigation_node (VLN); policy_node when neither is there."""
    for ns in POLICY_NAMESPACES:
        if any(f"{ns}/{t}" in source.topics for t in ("observation_info", "action_chunk")):
            return ns
    return POLICY_NAMESPACES[0]


def _replay_source(source: BagSource, opts: ReplayOptions, policy, log, write_report
                   ) -> ReplayResult:
    opts.out.mkdir(parents=True, exist_ok=True)
    if opts.policy_ns is None:
        opts.policy_ns = detect_policy_ns(source)
    result = ReplayResult(source=source, options=opts)
    result.errors.extend(source.warnings)
    store = source.typestore()
    for topic, typ in sorted(source.unknown.items()):
        result.errors.append(f"{topic}: unknown message type {typ} (no definition in the "
                             "bag): skipped")
    if policy is None:
        from qwen_vla_ros.model.policy import QwenVLAPolicy

        policy = QwenVLAPolicy.from_pretrained(opts.checkpoint, device=opts.device,
                                               dtype=opts.dtype)
    result.recorded, chunk_msgs = read_recorded(source, store, opts.policy_ns, result.errors)
    result.embodiment = _choose_embodiment(opts, policy, result.recorded.infos, source)
    spec = policy.spec(result.embodiment)
    decode_live_chunks(result.recorded, chunk_msgs, spec.action_names,
                       f"{opts.policy_ns}/action_chunk", result.errors)
    writer = ReplayBagWriter(opts.out / "replay_bag", store)
    rep = _Replayer(opts, source, store, policy, spec, result.recorded, result, writer)
    result.clock, result.spec = rep.clock, spec
    if not source.indexed:
        result.incomplete.extend(w for w in source.warnings if "truncated" in w)
    t0 = time.perf_counter()
    try:
        rep.check_topics()
        total = sum(source.counts.get(t, 0) for t in rep.sources)
        bar = _progress(total, opts.progress)
        try:
            rep.run(bar.update)
        finally:
            bar.close()
    except (BagError, ValueError) as exc:
        result.errors.append(str(exc))
        result.incomplete.append(str(exc))
        log(f"replay: {exc}")
    result.wall_s = time.perf_counter() - t0
    if result.ticks:
        result.span_s = result.ticks[-1].t - result.ticks[0].t + 1.0 / opts.rate_hz
    result.out_bag = writer.close()
    write_report(result, spec)
    return result


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", desc="replay", disable=not enabled, mininterval=0.5,
                leave=False)
