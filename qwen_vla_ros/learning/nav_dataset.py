"""Navigation demonstrations (a waypoints embodiment, e.g. ``vln``) from rosbag2 bags.

A sample is what ``navigation_node`` would have assembled at a camera frame's time t -- the
same ``PolicyLoop`` with its time-sampled frame history, fed the bag's frames in stamp order
-- and the target chunk: where the base actually went, from odometry. Step k (k = 0 .. H-1)
is the pose at t + (k+1) dt in the robot frame at t (x, y, yaw), and the stop flag is 1 from
the first step at or after the time the base came to rest for good (the end of the
demonstration) -- the semantics ``runtime.navigation.plan_from_chunk`` reads back: stop on
step 0 means "the goal is reached", on step k "the path ends at waypoint k".

Ticks are the camera's frames while ``/mode_manager/mode`` was TELEOP (where recorded), less
those whose targets cover a detour off the path (``collect --detours``, ``clear_of_detours``). The
instruction is the episode's (``/collect/episode``, else ``/base_sim/episode``, else the
dataset's default). Bags from ``qwen-vla-ros collect --task vln_goto`` and real-robot bags
with a camera, ``/odom`` and the mode topic read the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.learning.dataset import (
    EPISODE_TOPIC,
    DatasetSettings,
    Episode,
    Skipped,
    allowed_at,
    stack_frames,
)
from qwen_vla_ros.runtime.observation import Rejection
from qwen_vla_ros.runtime.policy_loop import PolicyLoop

ODOM_TOPIC = "/odom"
SIM_EPISODE_TOPIC = "/base_sim/episode"
REST_XY = 0.02  # m: the base is at rest once it stays this close to its final pose ...
REST_YAW = 0.05  # rad: ... and this close to its final heading
DETOUR_PAD_S = 0.1  # s: a detour's last command moves the base until the next command arrives


def rest_time(times: np.ndarray, poses: np.ndarray) -> float:
    """The earliest time from which the base stays at its final pose (x, y, yaw)."""
    d_xy = np.hypot(*(poses[:, :2] - poses[-1, :2]).T)
    d_yaw = np.abs(np.angle(np.exp(1j * (poses[:, 2] - poses[-1, 2]))))
    moving = np.flatnonzero((d_xy > REST_XY) | (d_yaw > REST_YAW))
    return float(times[0] if len(moving) == 0 else times[min(moving[-1] + 1, len(times) - 1)])


def clear_of_detours(ticks: np.ndarray, detours: list[list[float]], window: float
                    ) -> np.ndarray:
    """Which ``ticks`` have targets (the poses over (t, t + ``window``]) that cover none of
    ``detours`` ([start, end] clock seconds when the demonstrator was pushed off its path,
    ``collect --detours``): what the base did then was not demonstrated. The ticks after a
    detour -- the recovery -- are kept."""
    keep = np.ones(len(ticks), bool)
    for start, end in detours:
        keep &= ~((ticks < end + DETOUR_PAD_S) & (ticks + window > start))
    return keep


def waypoint_targets(times: np.ndarray, poses: np.ndarray, ticks: np.ndarray, dt: float,
                     horizon: int, names: list[str]) -> np.ndarray:
    """[N, H, D] targets for ``ticks`` from an odometry track (``times`` [M], ``poses`` [M, 3]
    odom frame): waypoints at t + (k+1) dt in the robot frame at t, held at the last pose past
    the end of the track, and the stop flag (dims named as the embodiment's ``names``)."""
    order = np.argsort(times, kind="stable")
    times, poses = times[order], poses[order]
    yaw = np.unwrap(poses[:, 2])

    def at(t: np.ndarray) -> np.ndarray:
        return np.stack([np.interp(t, times, poses[:, 0]), np.interp(t, times, poses[:, 1]),
                         np.interp(t, times, yaw)], axis=-1)

    rest = rest_time(times, poses)
    future = ticks[:, None] + dt * np.arange(1, horizon + 1)[None, :]  # [N, H]
    now, later = at(ticks), at(future)
    dx, dy = later[..., 0] - now[:, None, 0], later[..., 1] - now[:, None, 1]
    c, s = np.cos(now[:, 2])[:, None], np.sin(now[:, 2])[:, None]
    local = {"x": c * dx + s * dy, "y": -s * dx + c * dy,
             # continuous through +-pi (a turn past it is clipped, not flipped to -pi)
             "yaw": np.clip(later[..., 2] - now[:, None, 2], -np.pi, np.pi),
             "stop": (future >= rest - 1e-9).astype(np.float64)}
    missing = [n for n in names if n not in local]
    if missing:
        raise ValueError(f"no navigation target for action dims {missing}")
    return np.stack([local[n] for n in names], axis=-1)


def read_waypoint_episode(bag: Path, spec: EmbodimentSpec, settings: DatasetSettings
                          ) -> Episode | Skipped:
    """Samples of one navigation bag (no cache), or why there are none."""
    from qwen_vla_ros.replay.bagio import BagError, open_bag
    from qwen_vla_ros.replay.clock import ClockLog
    from qwen_vla_ros.ros.conversions import (
        ImageConversionError,
        msg_to_rgb,
        pose_2d,
        stamp_to_sec,
    )

    try:
        source = open_bag(bag)
    except (BagError, OSError) as exc:
        return Skipped(bag, f"unreadable: {exc}")
    store = source.typestore()
    camera = spec.cameras[0]
    cam_topic = settings.topic_of(camera)
    missing = [t for t in (cam_topic, ODOM_TOPIC) if t not in source.topics
               or t in source.unknown]
    if missing:
        return Skipped(bag, f"missing topic(s) {missing} (bag has {sorted(source.topics)})")
    small = [t for t in (ODOM_TOPIC, "/clock", "/mode_manager/mode", EPISODE_TOPIC,
                         SIM_EPISODE_TOPIC) if t in source.topics and t not in source.unknown]
    clocks = ClockLog()
    odom: list[tuple[float, float, float, float]] = []
    modes: list[tuple[int, str]] = []
    meta: dict[str, Any] = {}
    sim_episode: dict[str, Any] = {}
    try:
        for topic, log_ns, raw in source.messages(small):
            msg = store.deserialize_cdr(raw, source.topics[topic])
            if topic == "/clock":
                clocks.add(log_ns, msg)
            elif topic == ODOM_TOPIC:
                p = pose_2d(msg.pose.pose.position, msg.pose.pose.orientation)
                odom.append((stamp_to_sec(msg.header.stamp), p.x, p.y, p.yaw))
            elif topic == "/mode_manager/mode":
                modes.append((log_ns, msg.data))
            elif topic == EPISODE_TOPIC:
                meta = json.loads(msg.data)
            elif topic == SIM_EPISODE_TOPIC:
                sim_episode = json.loads(msg.data)
    except BagError as exc:
        return Skipped(bag, f"damaged: {exc}")
    if meta and not meta.get("success", True) and not settings.include_failed:
        return Skipped(bag, f"failed episode (seed {meta.get('seed')}); --include-failed "
                            "keeps it")
    track = np.array(odom, np.float64).reshape(-1, 4)
    if len(track) < 2 or not np.all(np.isfinite(track)):
        return Skipped(bag, f"odometry unusable: {len(track)} message(s), or NaN in them")
    frames: list[np.ndarray] = []
    stamps: list[float] = []
    try:
        for _, _, raw in source.messages([cam_topic]):
            typename = source.topics[cam_topic]
            msg = store.deserialize_cdr(raw, typename)
            try:
                rgb = msg_to_rgb(msg, typename.endswith("CompressedImage"))
            except ImageConversionError:
                continue  # the live node skips such a frame as well
            frames.append(rgb)
            stamps.append(stamp_to_sec(msg.header.stamp))
    except BagError as exc:
        return Skipped(bag, f"damaged: {exc}")
    order = np.argsort(stamps, kind="stable")
    ticks = np.asarray(stamps, np.float64)[order]
    clock = clocks.clock(source.start_ns)
    keep = allowed_at(clock, modes, settings.modes, ticks)
    keep &= (ticks >= track[:, 0].min()) & (ticks <= track[:, 0].max())
    keep &= clear_of_detours(ticks, meta.get("detours_s", []), spec.horizon * spec.dt)
    if not keep.any():
        return Skipped(bag, f"no camera frame while in {list(settings.modes)} with odometry")
    instruction = (meta.get("instruction") or sim_episode.get("instruction")
                   or settings.instruction)
    loop = PolicyLoop(spec, settings.max_age, instruction=instruction,
                      history_frames=settings.history_frames,
                      history_period=settings.history_period)
    index_of = {float(ticks[j]): int(order[j]) for j in range(len(ticks))}
    n_hist = settings.history_frames
    frame_idx, hist_idx, hist_age, kept_ticks = [], [], [], []
    rejected: dict[str, int] = {}
    start = float(sim_episode.get("start_time", -np.inf))  # frames before the reset: the
    for j, tick in enumerate(ticks):                     # previous episode's room
        if tick < start:
            continue
        loop.add_image(camera, frames[order[j]], float(tick))
        if not keep[j]:
            continue
        request = loop.request(float(tick))
        if isinstance(request, Rejection):
            rejected[str(request)] = rejected.get(str(request), 0) + 1
            continue
        past = [request.inputs[f"history:{camera}:{k}"] for k in range(n_hist)
                if f"history:{camera}:{k}" in request.inputs]
        idx = np.full(n_hist, -1, np.int64)
        age = np.zeros(n_hist)
        for k, t in enumerate(past):
            idx[k], age[k] = index_of[float(t)], tick - t
        frame_idx.append([order[j]])
        hist_idx.append(idx)
        hist_age.append(age)
        kept_ticks.append(float(tick))
    if not kept_ticks:
        return Skipped(bag, f"no valid sample: observation rejected {rejected or '-'}")
    ticks_kept = np.array(kept_ticks)
    actions = waypoint_targets(track[:, 0], track[:, 1:], ticks_kept, spec.dt, spec.horizon,
                               [a.name for a in spec.action])
    return Episode(bag, instruction, meta or sim_episode,
                   {camera: stack_frames(frames, settings.resize)},
                   np.array(frame_idx, np.int64), np.zeros((len(ticks_kept), 0)), actions,
                   ticks_kept, rejected, history_idx=np.array(hist_idx).reshape(-1, n_hist),
                   history_age=np.array(hist_age).reshape(-1, n_hist))
