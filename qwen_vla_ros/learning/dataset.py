"""Demonstrations from rosbag2 bags -> training samples, through the live observation path.

A sample is what ``policy_node`` would have assembled at time t -- the same ``PolicyLoop``
(joint-state merging by name, gripper units, staleness, newest frame per camera) fed with the
bag's messages in stamp order -- and the target chunk: the commands actually sent to the
followers for t, t+dt, ... t+(H-1)*dt (zero-order hold; held at the end of the episode), or
the measured follower states (``target="states"``). Ticks are the first camera's frames while
the arms were teleoperated (``/mode_manager/mode`` TELEOP and ``/aloha_adapter/state`` READY,
where recorded).

Bags from ``qwen-vla-ros collect``, from ``qwen-vla-ros demo``, or recorded on a robot with the
docs/replay.md topic set all read the same way; ``/collect/episode`` (seed, success, ...) is
used where present. A bag that cannot give samples is skipped with its reason, never silently.

Decoded frames (resized once as the model's image processor would, ``resize``) and the
samples are cached once per bag under ``<cache>/<key>/`` where the key hashes the bag's bytes
and these settings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.errors import QwenVLAError
from qwen_vla_ros.runtime.observation import Rejection
from qwen_vla_ros.runtime.policy_loop import PolicyLoop

CACHE_VERSION = 1
EPISODE_TOPIC = "/collect/episode"


class DatasetError(QwenVLAError):
    """No usable demonstrations (every bag skipped, or none found)."""


@dataclass(frozen=True)
class DatasetSettings:
    embodiment: str = "aloha"
    target: str = "commands"  # commands | states
    # Frames are resized once, as the model's image processor would (its resize_rule: factor,
    # min and max pixels; train() sets it from the policy), so training does not resize them
    # again each step; None: as recorded.
    resize: tuple[int, int, int] | None = None
    max_age: float = 0.3  # s, as policy_node's max_observation_age
    instruction: str = "transfer the red cube to the other arm"  # when the bag has none
    include_failed: bool = False  # episodes marked failed by /collect/episode
    modes: tuple[str, ...] = ("TELEOP",)  # where /mode_manager/mode is recorded
    camera_topics: tuple[tuple[str, str], ...] = ()  # (camera, topic); default /CAM/image_raw
    # The cameras assembled, in order: the policy's (training_settings sets them).
    cameras: tuple[str, ...] = ()
    # Past frames of the first camera in each observation, as navigation_node gives them
    # (its history_frames / history_period; train() sets them for waypoint embodiments).
    history_frames: int | None = None  # None: navigation_node's default (waypoints), else 0
    history_period: float = 1.0

    def __post_init__(self) -> None:
        if self.target not in ("commands", "states"):
            raise ValueError(f"target must be 'commands' or 'states', got {self.target!r}")

    def topic_of(self, camera: str) -> str:
        return dict(self.camera_topics).get(camera, f"/{camera}/image_raw")

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSettings:
        """Back from ``asdict`` / JSON (a checkpoint's train_log.json): lists to tuples."""
        d = dict(data)
        if d.get("resize") is not None:
            d["resize"] = tuple(d["resize"])
        d["modes"] = tuple(d.get("modes", cls.modes))
        d["camera_topics"] = tuple(tuple(pair) for pair in d.get("camera_topics", ()))
        d["cameras"] = tuple(d.get("cameras", ()))
        return cls(**d)

    def key(self) -> str:
        return json.dumps({**asdict(self), "version": CACHE_VERSION}, sort_keys=True)


@dataclass
class Episode:
    """One bag's samples: ``frames[camera]`` [F, h, w, 3] uint8 (memory-mapped from the
    cache), ``frame_idx`` [N, cameras], ``states`` [N, S], ``actions`` [N, H, A], ``ticks``
    [N] (s, the bag's clock)."""

    bag: Path
    instruction: str
    meta: dict[str, Any]
    frames: dict[str, np.ndarray]
    frame_idx: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    ticks: np.ndarray
    rejected: dict[str, int] = field(default_factory=dict)  # PolicyLoop reasons -> count
    inputs: list[dict[str, float]] = field(default_factory=list)  # stamps used (not cached)
    # Frame history (navigation): [N, history_frames] indices into the first camera's frames
    # (-1: none yet) and their ages (s) at the tick.
    history_idx: np.ndarray | None = None
    history_age: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ticks)


@dataclass
class Skipped:
    bag: Path
    reason: str


def training_settings(spec: EmbodimentSpec, base: DatasetSettings | None,
                      resize_rule: tuple[int, int, int]) -> DatasetSettings:
    """What training assembles for ``spec`` (train and pack alike): ``base`` for this
    embodiment, frames resized by the model's ``resize_rule`` (capped at the body's own
    ``image_pixels`` where it has one, as the policy does) unless ``base`` says, and for
    waypoint embodiments what navigation_node gives the model (its parameter defaults: frame
    history, observation age; the instruction is each episode's, a bag without one is
    skipped, never given the arm's)."""
    from dataclasses import replace

    settings = replace(base or DatasetSettings(), embodiment=spec.name,
                       cameras=tuple(spec.cameras))
    if settings.resize is None:  # frames resized once, as the model would each step
        from qwen_vla_ros.model.preprocess import capped_rule

        settings = replace(settings, resize=capped_rule(resize_rule, spec.image_pixels))
    if spec.kind != "waypoints":
        return replace(settings, history_frames=settings.history_frames or 0)
    from qwen_vla_ros.runtime.nav_control import NavigationParams

    nav = NavigationParams()
    frames = nav.history_frames if settings.history_frames is None else settings.history_frames
    return replace(settings, history_frames=frames, history_period=nav.history_period_s,
                   max_age=nav.max_observation_age, instruction="")


def find_bags(paths: Iterable[Path]) -> list[Path]:
    """Bag directories (with metadata.yaml) or bare .mcap/.db3 files under ``paths``."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise DatasetError(f"{p}: no such file or directory")
        if (p / "metadata.yaml").exists() or p.suffix in (".mcap", ".db3"):
            out.append(p)
            continue
        found = sorted({m.parent for m in p.rglob("metadata.yaml")})
        if not found:
            raise DatasetError(f"{p}: no rosbag2 bag in it (no metadata.yaml, .mcap or .db3)")
        out.extend(found)
    return out


def bag_hash(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _zoh(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Zero-order hold: the last value at or before each of ``at`` (NaN before the first)."""
    i = np.searchsorted(times, at, side="right") - 1
    out = values[np.clip(i, 0, None)].astype(np.float64)
    out[i < 0] = np.nan
    return out


def clock_times(clock, logs: Iterable[int]) -> np.ndarray:
    """Bag log times -> the nodes' clock (-inf before the first /clock message)."""
    return np.array([-np.inf if (c := clock.at(log)) is None else c for log in logs])


def allowed_at(clock, log_series: Sequence[tuple[int, str]], values: Sequence[str],
               ticks: np.ndarray) -> np.ndarray:
    """Which ``ticks`` (the nodes' clock) fall where the last recorded state of a topic
    (``log_series``: (bag log time, value)) is one of ``values``; all where none recorded."""
    if not log_series:
        return np.ones(len(ticks), bool)
    t = clock_times(clock, (log for log, _ in log_series))
    order = np.argsort(t, kind="stable")
    labels = np.array([v for _, v in log_series])[order]
    idx = np.searchsorted(t[order], ticks, side="right") - 1
    return (idx >= 0) & np.isin(labels[np.clip(idx, 0, None)], list(values))


def read_episode(bag: Path, spec: EmbodimentSpec, settings: DatasetSettings,
                 at_ticks: Sequence[float] | None = None) -> Episode | Skipped:
    """Samples of one bag (no cache), or why there are none. ``at_ticks``: assemble the
    observations at these clock times instead (every one, whatever the mode; arms only)."""
    if spec.kind == "waypoints":
        from qwen_vla_ros.learning.nav_dataset import read_waypoint_episode

        return read_waypoint_episode(bag, spec, settings)
    from qwen_vla_ros.replay.bagio import BagError, open_bag
    from qwen_vla_ros.replay.clock import ClockLog
    from qwen_vla_ros.ros.conversions import ImageConversionError, msg_to_rgb, stamp_to_sec

    try:
        source = open_bag(bag)
    except (BagError, OSError) as exc:
        return Skipped(bag, f"unreadable: {exc}")
    store = source.typestore()
    cams = {settings.topic_of(c): c for c in spec.cameras}
    joints = {f"/{r}/joint_states": r for r in spec.robots}
    cmd_topics = {f"/{r}/commands/{k}": (r, k) for r in spec.robots
                  for k in ("joint_group", "joint_single")}
    need = [*cams, *joints, *(cmd_topics if settings.target == "commands" else [])]
    missing = [t for t in need if t not in source.topics or t in source.unknown]
    if missing:
        return Skipped(bag, f"missing topic(s) {missing} (bag has {sorted(source.topics)})")
    small = [t for t in (*joints, *cmd_topics, "/clock", "/mode_manager/mode",
                         "/aloha_adapter/state", EPISODE_TOPIC, "/policy_node/instruction")
             if t in source.topics and t not in source.unknown]
    events: list[tuple[float, int, str, Any]] = []  # (stamp, order, kind, payload)
    clocks = ClockLog()
    cmds: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = {}
    modes, states_adapter, meta, instructions = [], [], {}, []
    try:
        for topic, log_ns, raw in source.messages(small):
            msg = store.deserialize_cdr(raw, source.topics[topic])
            if topic == "/clock":
                clocks.add(log_ns, msg)
            elif topic in joints:
                events.append((stamp_to_sec(msg.header.stamp), len(events), "joints",
                               (joints[topic], list(msg.name), list(msg.position))))
            elif topic in cmd_topics:
                robot, kind = cmd_topics[topic]
                value = np.asarray(msg.cmd, np.float64).reshape(-1)
                cmds.setdefault((robot, kind), []).append((log_ns, value))
            elif topic == "/mode_manager/mode":
                modes.append((log_ns, msg.data))
            elif topic == "/aloha_adapter/state":
                states_adapter.append((log_ns, msg.data.split(":")[0]))
            elif topic == EPISODE_TOPIC:
                meta = json.loads(msg.data)
            elif topic == "/policy_node/instruction":
                instructions.append(msg.data)
    except BagError as exc:
        return Skipped(bag, f"damaged: {exc}")
    if meta and not meta.get("success", True) and not settings.include_failed:
        return Skipped(bag, f"failed episode (seed {meta.get('seed')}, max reward "
                            f"{meta.get('max_reward')}); --include-failed keeps it")
    clock = clocks.clock(source.start_ns)
    frames: dict[str, list[np.ndarray]] = {c: [] for c in spec.cameras}
    try:
        for topic, _, raw in source.messages(list(cams)):
            typename = source.topics[topic]
            msg = store.deserialize_cdr(raw, typename)
            cam = cams[topic]
            try:
                rgb = msg_to_rgb(msg, typename.endswith("CompressedImage"))
            except ImageConversionError as exc:
                events.append((stamp_to_sec(msg.header.stamp), len(events), "bad", str(exc)))
                continue
            events.append((stamp_to_sec(msg.header.stamp), len(events), "image",
                           (cam, len(frames[cam]))))
            frames[cam].append(rgb)
    except BagError as exc:
        return Skipped(bag, f"damaged: {exc}")
    first = spec.cameras[0]
    ticks = np.array(sorted(s for s, _, k, p in events if k == "image" and p[0] == first))

    if at_ticks is not None:
        ticks = np.asarray(at_ticks, np.float64)
    else:
        ticks = ticks[allowed_at(clock, modes, settings.modes, ticks)
                      & allowed_at(clock, states_adapter, ["READY"], ticks)]
    if len(ticks) == 0:
        return Skipped(bag, f"no camera frame while in {list(settings.modes)} (and READY)")
    # Targets at t + k*dt: each command stream held between its messages (bag clock).
    at = ticks[:, None] + np.arange(spec.horizon)[None, :] * spec.dt  # [N, H]
    actions = np.full((len(ticks), spec.horizon, spec.action_dim), np.nan)
    if settings.target == "commands":
        for robot in spec.robots:
            idx = spec.dims_of(robot)
            arm = [i for i in idx if spec.action[i].gripper is None]
            grip = [i for i in idx if spec.action[i].gripper is not None]
            for kind, dims in (("joint_group", arm), ("joint_single", grip)):
                stream = cmds.get((robot, kind), [])
                if not stream or not dims:
                    continue
                t = clock_times(clock, (log for log, _ in stream))
                v = np.stack([x[:len(dims)] for _, x in stream])
                if kind == "joint_single":  # motor angle -> normalised opening
                    v = np.stack([spec.action[d].gripper.to_normalised(v[:, j])
                                  for j, d in enumerate(dims)], axis=1)
                order = np.argsort(t, kind="stable")
                held = _zoh(t[order], v[order], at.reshape(-1))
                actions[:, :, dims] = held.reshape(len(ticks), spec.horizon, len(dims))
    # Observations: PolicyLoop fed in stamp order, asked at each tick (as the live node).
    loop = PolicyLoop(spec, settings.max_age, instruction=(
        meta.get("instruction") or (instructions[-1] if instructions else "")
        or settings.instruction))
    events.sort(key=lambda e: (e[0], e[1]))
    frame_idx = np.zeros((len(ticks), len(spec.cameras)), np.int64)
    states = np.full((len(ticks), spec.state_dim), np.nan)
    valid = np.zeros(len(ticks), bool)
    rejected: dict[str, int] = {}
    inputs: list[dict[str, float] | None] = [None] * len(ticks)
    current = dict.fromkeys(spec.cameras, -1)
    measured: list[tuple[float, np.ndarray]] = []
    e = 0
    for n, tick in enumerate(ticks):
        while e < len(events) and events[e][0] <= tick + 1e-9:
            stamp, _, kind, payload = events[e]
            if kind == "image":
                cam, i = payload
                loop.add_image(cam, frames[cam][i], stamp)
                current[cam] = i
            elif kind == "joints":
                robot, names, pos = payload
                loop.add_joint_state(robot, names, pos, stamp)
            e += 1
        request = loop.request(float(tick))
        if isinstance(request, Rejection):
            key = str(request).split(":")[1].strip() if ":" in str(request) else str(request)
            rejected[key] = rejected.get(key, 0) + 1
            continue
        states[n] = request.observation.state
        inputs[n] = request.inputs
        frame_idx[n] = [current[c] for c in spec.cameras]
        measured.append((float(tick), request.observation.state))
        valid[n] = True
    if settings.target == "states" and measured:
        t = np.array([m[0] for m in measured])
        v = np.stack([m[1] for m in measured])
        held = _zoh(t, v, at.reshape(-1))
        actions = held.reshape(len(ticks), spec.horizon, spec.action_dim)
    valid &= np.all(np.isfinite(actions.reshape(len(ticks), -1)), axis=1)
    if not valid.any():
        return Skipped(bag, f"no valid sample: observation rejected {rejected or '-'}, or "
                            "no command before the first frame")
    ep = Episode(bag, loop.instruction, meta,
                 {c: stack_frames(f, settings.resize) for c, f in frames.items()},
                 frame_idx[valid], states[valid], actions[valid], ticks[valid], rejected)
    ep.inputs = [inputs[n] for n in np.flatnonzero(valid)]
    return ep


def stack_frames(frames: list[np.ndarray], resize: tuple[int, int, int] | None) -> np.ndarray:
    if not frames:
        return np.zeros((0, 1, 1, 3), np.uint8)
    if resize is None:
        return np.stack(frames)
    from qwen_vla_ros.model.preprocess import resize_frames

    return np.concatenate([resize_frames(np.stack(frames[i:i + 64]), resize)
                           for i in range(0, len(frames), 64)])


def _save(ep: Episode, folder: Path) -> None:
    """Writes the cache entry whole or not at all. Each writer has a folder of its own until
    the rename, so two trainings filling one cache at once (the same data, the same frame
    size) each finish: the second finds the entry already there and keeps it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp.", dir=folder.parent))
    for cam, f in ep.frames.items():
        np.save(tmp / f"frames_{cam}.npy", f)
    history = {} if ep.history_idx is None else {"history_idx": ep.history_idx,
                                                 "history_age": ep.history_age}
    np.savez(tmp / "samples.npz", frame_idx=ep.frame_idx, states=ep.states,
             actions=ep.actions, ticks=ep.ticks, **history)
    (tmp / "episode.json").write_text(json.dumps({
        "bag": str(ep.bag), "instruction": ep.instruction, "meta": ep.meta,
        "cameras": list(ep.frames), "rejected": ep.rejected}, indent=1))
    try:
        tmp.rename(folder)  # complete or absent: a cut run leaves no valid-looking entry
    except OSError:
        if not (folder / "episode.json").exists():
            raise
        shutil.rmtree(tmp)  # another run wrote the same entry first


def _load(folder: Path) -> Episode:
    info = json.loads((folder / "episode.json").read_text())
    s = np.load(folder / "samples.npz")
    frames = {c: np.load(folder / f"frames_{c}.npy", mmap_mode="r") for c in info["cameras"]}
    return Episode(Path(info["bag"]), info["instruction"], info["meta"], frames,
                   s["frame_idx"], s["states"], s["actions"], s["ticks"], info["rejected"],
                   history_idx=s.get("history_idx"),
                   history_age=s.get("history_age"))


def load_episodes(paths: Iterable[Path], spec: EmbodimentSpec, settings: DatasetSettings,
                  cache: Path | None = None, log=print
                  ) -> tuple[list[Episode], list[Skipped]]:
    """Every bag under ``paths``: its episode (from the cache when there) or why skipped. A
    path that is a pack (``learning/pack.py``) gives its episodes instead of bags."""
    from qwen_vla_ros.learning.pack import is_pack, read_pack

    episodes: list[Episode] = []
    skipped: list[Skipped] = []
    bags = []
    for p in map(Path, paths):
        if is_pack(p):
            eps, sk = read_pack(p, settings)
            episodes += eps
            skipped += sk
        else:
            bags.append(p)
    for bag in find_bags(bags) if bags else []:
        folder = None
        if cache is not None:
            key = hashlib.sha256((bag_hash(bag) + settings.key()).encode()).hexdigest()[:20]
            folder = cache / key
            if (folder / "episode.json").exists():
                episodes.append(_load(folder))
                continue
        ep = read_episode(bag, spec, settings)
        if isinstance(ep, Skipped):
            log(f"skipped {bag}: {ep.reason}")
            skipped.append(ep)
            continue
        if folder is not None:
            _save(ep, folder)
            ep = _load(folder)
        episodes.append(ep)
    return episodes, skipped
