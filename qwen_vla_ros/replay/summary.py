"""Read a recorded ALOHA bag (rosbags; no ROS needed) into arrays, summarise and plot it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.replay.analysis import as_number

MODE_COLORS = {"TELEOP": "#3b82f6", "POLICY": "#22c55e", "HOLD": "#9ca3af"}


@dataclass
class BagData:
    # Every time below is on one axis (replay/clock.py): sim seconds when the bag has /clock,
    # else seconds since the bag's first message.
    time_base: str = ""
    commands: list[tuple[float, np.ndarray]] = field(default_factory=list)  # 14-vectors
    command_times: list[float] = field(default_factory=list)  # first arm's group commands
    # each command stream in its own order: (robot, "arm"|"gripper") -> [(t, values)]
    streams: dict[tuple[str, str], list[tuple[float, np.ndarray]]] = field(default_factory=dict)
    measured: list[tuple[float, np.ndarray]] = field(default_factory=list)
    modes: list[tuple[float, str]] = field(default_factory=list)
    chunks: int = 0
    diagnostics: dict[str, str] = field(default_factory=dict)  # last policy values
    results: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # messages per topic in the bag
    errors: list[str] = field(default_factory=list)


def read_aloha_bag(path: Path, spec: EmbodimentSpec) -> BagData:
    """Commands, measured joints, modes, diagnostics and episode results of an ALOHA bag.
    A damaged bag gives what was readable, with the reason in ``errors``."""
    from qwen_vla_ros.replay.bagio import BagReadError, open_bag
    from qwen_vla_ros.replay.clock import Clock

    source = open_bag(path)
    store = source.typestore()
    data = BagData()
    data.errors.extend(source.warnings)
    robots = spec.robots
    arm_idx = {r: [i for i in spec.dims_of(r) if spec.action[i].gripper is None]
               for r in robots}
    grip_idx = {r: next((i for i in spec.dims_of(r) if spec.action[i].gripper is not None),
                        None) for r in robots}
    current = np.full(spec.action_dim, np.nan)
    latest_measured = {r: None for r in robots}
    clock = Clock.from_source(source, store)
    data.time_base = clock.time_base
    data.counts = dict(source.counts)
    data.chunks = source.counts.get("/policy_node/action_chunk", 0)
    # Only what the summary decodes: no images, clock or chunks (counted above).
    skip = {"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage",
            "rosgraph_msgs/msg/Clock", "trajectory_msgs/msg/JointTrajectory"}
    topics = [t for t, typ in source.topics.items()
              if t not in source.unknown and typ not in skip]
    try:
        for topic, stamp, raw in source.messages(topics):
            t = clock.axis(stamp)
            msg = store.deserialize_cdr(raw, source.topics[topic])
            robot = topic.split("/")[1]
            if topic.endswith("/commands/joint_group") and robot in robots:
                current[arm_idx[robot]] = np.asarray(msg.cmd, float)
                data.streams.setdefault((robot, "arm"), []).append(
                    (t, np.asarray(msg.cmd, float)))
                if robot == robots[0]:
                    data.command_times.append(t)
                # About one vector per control tick: topics are separate DDS streams, so a
                # vector can mix neighbouring ticks; exact per-step checks use ``streams``.
                if robot == robots[-1] and np.all(np.isfinite(current)):
                    data.commands.append((t, current.copy()))
            elif (topic.endswith("/commands/joint_single") and robot in robots
                  and grip_idx[robot] is not None):
                g = spec.action[grip_idx[robot]].gripper
                current[grip_idx[robot]] = float(g.to_normalised(msg.cmd))
                data.streams.setdefault((robot, "gripper"), []).append(
                    (t, np.array([current[grip_idx[robot]]])))
            elif topic.endswith("/joint_states") and robot in robots:
                names = list(msg.name)
                q = np.asarray(msg.position, float)
                v = np.full(len(spec.dims_of(robot)), np.nan)
                for k, i in enumerate(spec.dims_of(robot)):
                    joint, unit = spec.action[i].measured_as()
                    if joint in names:
                        raw_q = q[names.index(joint)]
                        v[k] = float(unit.to_normalised(raw_q)) if unit else raw_q
                latest_measured[robot] = v
                if all(m is not None for m in latest_measured.values()):
                    data.measured.append((t, np.concatenate([latest_measured[r]
                                                             for r in robots])))
            elif topic == "/mode_manager/mode":
                data.modes.append((t, msg.data))
            elif topic == "/diagnostics":
                for st in msg.status:
                    if st.name.endswith("policy"):
                        data.diagnostics = {kv.key: kv.value for kv in st.values}
                        data.diagnostics["message"] = st.message
            elif topic == "/aloha_sim/episode_result":
                data.results.append({**json.loads(msg.data), "t": t})
    except BagReadError as exc:
        if str(exc) not in data.errors:
            data.errors.append(str(exc))
    return data


def mode_at(modes: list[tuple[float, str]], t: float) -> str:
    mode = "HOLD"
    for tm, m in modes:
        if tm <= t:
            mode = m
    return mode


def span_rate(times: np.ndarray, max_gap: float, end_fit: int = 25) -> float | None:
    """Events per second from their clock readings, over the spans where no interval exceeds
    ``max_gap``: the spans' intervals over their durations. A sim-time reading is the last
    /clock the recorder had received: quantised to the clock's step, and under load a step
    early or late against the message it stamps. A span's last reading minus its first puts
    that error, a step at each end, all on the figure (1.1 % over a 3.5 s span at 50 Hz), so
    each end is read off a least-squares line through the ``end_fit`` readings there, which
    averages it out. One line through the whole span would not do: under load the rate changes
    within a span (the single-process demo misses ticks while the policy infers), and such a
    line's slope is then off the mean rate by up to 6 %. None: no span of three or more
    readings."""
    times = np.asarray(times, np.float64)
    breaks = np.flatnonzero(np.diff(times) > max_gap) + 1
    intervals, duration = 0, 0.0
    for span in np.split(times, breaks):
        n = len(span)
        if n < 3:
            continue
        m = min(end_fit, n)
        idx = np.arange(n, dtype=np.float64)
        start = np.polyval(np.polyfit(idx[:m], span[:m], 1), 0.0)
        end = np.polyval(np.polyfit(idx[-m:], span[-m:], 1), n - 1.0)
        intervals += n - 1
        duration += float(end - start)
    return intervals / duration if duration > 0 else None


def summarize(data: BagData, spec: EmbodimentSpec) -> dict[str, Any]:
    times = np.array([t for t, _ in data.commands])
    cmds = np.array([c for _, c in data.commands]) if data.commands else np.zeros((0, 14))
    out: dict[str, Any] = {"commands": len(cmds), "chunks": data.chunks,
                           "topics": dict(sorted(data.counts.items()))}
    out["time_base"] = data.time_base
    if len(data.command_times) > 2:
        ct = np.array(data.command_times)
        dt = np.diff(ct)
        # Commands per second while commanding: intervals up to 0.25 s (HOLD sends nothing).
        rate = span_rate(ct, max_gap=0.25)
        if rate is not None:
            out["control_rate_hz"] = rate
        out["command_period_ms_p99"] = float(np.percentile(dt, 99) * 1e3)
    out["inference_ms"] = {"p50": as_number(data.diagnostics.get("inference_ms_p50")),
                           "p99": as_number(data.diagnostics.get("inference_ms_p99"))}
    out["observation_age_ms"] = {"p50": as_number(data.diagnostics.get("observation_age_ms_p50")),
                                 "p99": as_number(data.diagnostics.get("observation_age_ms_p99"))}
    out["mode_transitions"] = [{"t": round(t, 3), "mode": m} for t, m in data.modes]
    # Handover: the first POLICY command against the measured pose it started from, then the
    # ramp's consecutive commands; both in units of the per-step velocity limit. A command
    # read at the switch's clock step may have been sent before the switch (the recorder
    # cannot order messages of one step), and under load the adapter may send one more TELEOP
    # command after it: of the first two commands read after the switch, the one whose ramp
    # jumps least is taken as the first POLICY command. A jump of J steps still reads at least
    # J - 1 (the second command is within a step of the first). The measured pose is the last
    # one read at or before that command, not at the switch: the adapter acts on the switch at
    # its next tick, with the newest pose it has then; under load that is a tick or two after
    # the switch is read, and the arm moved meanwhile (a loaded run read 2.0 steps so).
    step_limit = spec.max_velocity() * spec.dt
    mt = np.array([t for t, _ in data.measured])
    handover = None
    for t_switch, m in data.modes:
        if m != "POLICY" or len(times) < 2 or len(mt) == 0:
            continue
        k = int(np.searchsorted(times, t_switch, side="right"))
        ramps = []
        for first in range(k, min(k + 2, len(cmds))):
            # at or before the command: sim-time readings are quantised, equal times included
            j = int(np.searchsorted(mt, times[first], side="right")) - 1
            if j >= 0:
                ramps.append(np.abs(np.diff(np.vstack([data.measured[j][1],
                                                       cmds[first: first + 25]]), axis=0)))
        if not ramps:
            continue
        jumps = min(ramps, key=lambda r: float((r / step_limit).max()))
        ratio = jumps / step_limit
        worst = np.unravel_index(int(ratio.argmax()), ratio.shape)
        handover = {"t": round(t_switch, 3), "max_jump": float(jumps[worst]),
                    "max_jump_joint": spec.action_names[int(worst[1])],
                    "max_jump_over_step_limit": float(ratio.max())}
    out["handover"] = handover
    episodes = [{"seed": r["seed"], "success": r["success"], "max_reward": r["max_reward"],
                 "mode_at_end": mode_at(data.modes, r["t"])} for r in data.results]
    out["episodes"] = episodes
    out["task_success"] = {m: f"{sum(e['success'] for e in episodes if e['mode_at_end'] == m)}"
                              f"/{sum(1 for e in episodes if e['mode_at_end'] == m)}"
                           for m in sorted({e["mode_at_end"] for e in episodes})}
    return out


def plot(data: BagData, spec: EmbodimentSpec, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = spec.action_dim
    cols = 2
    rows = (n + 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(14, 2.0 * rows), sharex=True)
    tc = np.array([t for t, _ in data.commands])
    c = np.array([v for _, v in data.commands]) if data.commands else np.zeros((0, n))
    tm = np.array([t for t, _ in data.measured])
    m = np.array([v for _, v in data.measured]) if data.measured else np.zeros((0, n))
    t_end = max([*tc.tolist(), *tm.tolist(), 0.0])
    spans = [(t, data.modes[i + 1][0] if i + 1 < len(data.modes) else t_end, mode)
             for i, (t, mode) in enumerate(data.modes)]
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        for a, b, mode in spans:
            ax.axvspan(a, b, color=MODE_COLORS.get(mode, "#ddd"), alpha=0.15, lw=0)
        for r in data.results:  # episode ends: the sim resets the scene there
            ax.axvline(r["t"], color="#6b7280", lw=0.8, ls=":")
        if len(tm):
            ax.plot(tm, m[:, i], color="k", lw=1.0, label="measured")
        if len(tc):
            ax.plot(tc, c[:, i], color="#dc2626", lw=0.8, ls="--", label="command")
        d = spec.action[i]
        ax.set_ylabel(f"{d.name}\n[{d.unit}]", fontsize=7)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7, loc="upper right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=col, alpha=0.3) for col in MODE_COLORS.values()]
    fig.legend(handles, list(MODE_COLORS), loc="upper center", ncol=3, fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel(f"{data.time_base or 'time'} (s)")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
