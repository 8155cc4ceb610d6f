"""``qwen-vla-ros demo vln``: the VLN stack closed-loop in the simulated room, recorded.

Starts the ``vln_sim`` bringup in one process (base_sim, navigation_node, mode_manager),
engages POLICY through the mode service, runs ``seconds`` of sim time, then HOLD. Records
``OUT/bag`` (MCAP) and writes ``OUT/summary.json`` and ``OUT/vln.png`` (top view: room,
objects, the base's path, every plan). Without ``checkpoint`` it runs the trained one shipped
in ``checkpoints/vln_goto_tiny`` (follows the named colour; vln_goto about half the time:
its README); without a shipped one, a tiny random-init checkpoint, which wanders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.demos.common import (
    aligned,
    ensure_checkpoint,
    running_bringup,
    wait_sim,
    write_summary,
)

TOPICS = [  # (topic, module, class, qos name)
    ("/clock", "rosgraph_msgs.msg", "Clock", None),
    ("/odom", "nav_msgs.msg", "Odometry", "SENSOR"),
    ("/cmd_vel", "geometry_msgs.msg", "Twist", "COMMAND"),
    ("/front/image_raw", "sensor_msgs.msg", "Image", "SENSOR"),
    ("/navigation_node/waypoints", "nav_msgs.msg", "Path", "COMMAND"),
    ("/navigation_node/status", "std_msgs.msg", "String", "LATCHED"),
    ("/navigation_node/action_chunk", "trajectory_msgs.msg", "JointTrajectory", "COMMAND"),
    ("/navigation_node/observation_info", "std_msgs.msg", "String", "COMMAND"),
    ("/goal_pose", "geometry_msgs.msg", "PoseStamped", "COMMAND"),
    ("/mode_manager/mode", "std_msgs.msg", "String", "LATCHED"),
    ("/diagnostics", "diagnostic_msgs.msg", "DiagnosticArray", "COMMAND"),
    ("/base_sim/bumped", "std_msgs.msg", "Bool", "COMMAND"),
    ("/tf", "tf2_msgs.msg", "TFMessage", None),
]


def vln_topics():
    import importlib

    from qwen_vla_ros.ros import qos

    out = []
    for t, m, c, q in TOPICS:
        try:
            cls = getattr(importlib.import_module(m), c)
        except ImportError:  # tf2_msgs on a pip-only install: not recorded
            continue
        out.append((t, cls, getattr(qos, q) if q else 10))
    return out


def run_vln_demo(out: Path, seconds: float = 20.0, checkpoint: Path | None = None,
                 seed: int = 0, instruction: str = "go to the red box",
                 rate_factor: float = 1.0, log=print) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    ckpt = ensure_checkpoint(out, checkpoint, seed, embodiment="vln")
    bag = out / "bag"
    values = {"checkpoint": str(ckpt), "instruction": instruction,
              "rate_factor": str(rate_factor)}
    with running_bringup("vln_sim", values, bag, lambda _: vln_topics(),
                         {"navigation_node": {"torch_threads": 1, "seed": seed}}
                         ) as (nodes, mode):
        sim = nodes["base_sim"]
        log(f"demo vln: {seconds:g} s of sim time, instruction {instruction!r} ({ckpt})")
        wait_sim(sim, 1.0)
        mode("engage_policy")
        wait_sim(sim, seconds)
        mode("hold")
    data = read_vln_bag(bag)
    summary = summarize_vln(data)
    summary.update(checkpoint=str(ckpt), bag=str(bag), instruction=instruction)
    summary["plot"] = str(plot_vln(data, out / "vln.png"))
    return write_summary(out, summary)


def read_vln_bag(bag: Path) -> dict[str, Any]:
    from qwen_vla_ros.replay.bagio import open_bag
    from qwen_vla_ros.replay.clock import Clock
    from qwen_vla_ros.ros.conversions import pose_2d

    src = open_bag(bag)
    store = src.typestore()
    # One time axis (replay/clock.py): sim seconds when the bag has /clock, as the nodes run.
    clock = Clock.from_source(src, store)
    d: dict[str, Any] = {"odom": [], "cmd": [], "plans": [], "status": [], "modes": [],
                         "goals": 0, "bumps": 0, "diag": {}, "counts": dict(src.counts),
                         "time_base": clock.time_base}
    small = [t for t in src.topics if t not in ("/front/image_raw", "/clock")
             and t not in src.unknown]
    for topic, log_ns, raw in src.messages(small):
        t = clock.axis(log_ns)
        msg = store.deserialize_cdr(raw, src.topics[topic])
        if topic == "/odom":
            p = pose_2d(msg.pose.pose.position, msg.pose.pose.orientation)
            d["odom"].append((t, p.x, p.y, p.yaw,
                              msg.twist.twist.linear.x, msg.twist.twist.angular.z))
        elif topic == "/cmd_vel":
            d["cmd"].append((t, msg.linear.x, msg.angular.z))
        elif topic == "/navigation_node/waypoints":
            d["plans"].append((t, np.array([[p.pose.position.x, p.pose.position.y]
                                            for p in msg.poses]).reshape(-1, 2)))
        elif topic == "/navigation_node/status":
            d["status"].append((t, msg.data))
        elif topic == "/mode_manager/mode":
            d["modes"].append((t, msg.data))
        elif topic == "/goal_pose":
            d["goals"] += 1
        elif topic == "/base_sim/bumped":
            d["bumps"] += 1
        elif topic == "/diagnostics":
            for st in msg.status:
                if st.name.endswith("navigation"):
                    d["diag"] = {kv.key: kv.value for kv in st.values}
    return d


def summarize_vln(d: dict[str, Any]) -> dict[str, Any]:
    """Figures of a ``read_vln_bag`` result."""
    from qwen_vla_ros.replay.summary import span_rate

    odom = np.array([o[1:3] for o in d["odom"]]) if d["odom"] else np.zeros((0, 2))
    cmd = np.array([c[1:] for c in d["cmd"]]) if d["cmd"] else np.zeros((0, 2))
    ct = np.array([c[0] for c in d["cmd"]])
    s: dict[str, Any] = {
        "plans": len(d["plans"]), "goals_published": d["goals"],
        "distance_m": float(np.sum(np.linalg.norm(np.diff(odom, axis=0), axis=1)))
        if len(odom) > 1 else 0.0,
        "start": odom[0].tolist() if len(odom) else None,
        "end": odom[-1].tolist() if len(odom) else None,
        # Commands per second of sim time (a busy machine slows the sim, not the rate), over
        # the spans without a gap (span_rate): under sim time a 20 Hz timer fires on the 50 Hz
        # /clock's ticks, so single periods alternate (40 / 60 ms) and say little.
        "cmd_vel_hz": span_rate(ct, max_gap=0.25) if len(ct) > 2 else None,
        "time_base": d["time_base"],
        "max_linear": float(np.abs(cmd[:, 0]).max()) if len(cmd) else 0.0,
        "max_angular": float(np.abs(cmd[:, 1]).max()) if len(cmd) else 0.0,
        "commands": len(d["cmd"]),
        "bumped_steps": d["bumps"],
        "status_transitions": [{"t": round(t, 2), "status": x} for t, x in d["status"]],
        "mode_transitions": [{"t": round(t, 2), "mode": m} for t, m in d["modes"]],
        "inference_ms": {"p50": d["diag"].get("inference_ms_p50"),
                         "p99": d["diag"].get("inference_ms_p99")},
        "topics": d["counts"],
    }
    return s


def plot_vln(d: dict[str, Any], path: Path) -> Path:
    """Top view of a ``read_vln_bag`` result: room, objects, base path, every plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qwen_vla_ros.sim.base import OBJECTS, ROOM

    fig, ax = plt.subplots(figsize=(6.5, 6.5))
    ax.add_patch(plt.Rectangle((-ROOM, -ROOM), 2 * ROOM, 2 * ROOM, fill=False, lw=2))
    for o in OBJECTS:
        ax.add_patch(plt.Circle((o.x, o.y), o.radius, color=o.rgba[:3]))
        ax.annotate(o.name, (o.x, o.y + o.radius + 0.08), ha="center", fontsize=7)
    for _, wps in d["plans"]:
        if len(wps):
            ax.plot(wps[:, 0], wps[:, 1], ".-", color="#16a34a", alpha=0.35, lw=0.8, ms=3)
    if d["odom"]:
        xy = np.array([o[1:3] for o in d["odom"]])
        ax.plot(xy[:, 0], xy[:, 1], color="k", lw=1.5, label="base (odometry)")
        ax.plot(*xy[0], "o", color="#2563eb", label="start")
        ax.plot(*xy[-1], "s", color="#dc2626", label="end")
    ax.plot([], [], ".-", color="#16a34a", label="plans (odom frame)")
    ax.set_xlim(-ROOM - 0.2, ROOM + 0.2)
    ax.set_ylim(-ROOM - 0.2, ROOM + 0.2)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"VLN demo: {len(d['plans'])} plans", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def format_vln_summary(s: dict[str, Any]) -> str:
    inf = s["inference_ms"]
    return aligned([
        ("times in", str(s.get("time_base", "?"))),
        ("plans", f"{s['plans']} ({s['goals_published']} goals published)"),
        ("distance", f"{s['distance_m']:.2f} m, from {s['start']} to {s['end']}"),
        ("cmd_vel", f"{s['cmd_vel_hz'] or float('nan'):.1f} Hz, max |v| "
                    f"{s['max_linear']:.2f} m/s, max |w| {s['max_angular']:.2f} rad/s"),
        ("inference", f"p50 {inf['p50']} ms, p99 {inf['p99']} ms"),
        ("status", ", ".join(f"{x['status']}@{x['t']:.1f}s"
                             for x in s["status_transitions"][-4:])),
        ("bumped steps", str(s["bumped_steps"])),
        ("bag", s["bag"]),
        ("plot", s["plot"]),
    ])
