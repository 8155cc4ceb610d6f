"""The main job: the simulated ALOHA stack closed-loop, recorded and summarised.

Starts the ``aloha_sim`` bringup in one process (sim, scripted leader, aloha_adapter,
policy_node, mode_manager), engages TELEOP (the scripted leader drives the followers through
the adapter), switches to POLICY through the mode service after ``teleop_seconds`` of sim time,
then HOLD at the end. Everything is recorded to ``OUT/bag`` (MCAP, readable by rosbags), then
read back for ``OUT/summary.json`` and ``OUT/demo.png`` (commands vs measured joints, modes
shaded). Without ``checkpoint`` it runs the trained transfer_cube checkpoint shipped in
``checkpoints/`` (docs/learning.md: it succeeds on about half of unseen seeds), executed as
``eval`` does (``blend="rtc"``); without a shipped one, a tiny random-init checkpoint made in
``OUT/checkpoint``, which moves safely but does not solve the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qwen_vla_ros.demos.common import (
    aligned,
    ensure_checkpoint,
    running_bringup,
    wait_sim,
    write_summary,
)


def run_sim_demo(out: Path, seconds: float = 20.0, teleop_seconds: float = 9.5,
                 checkpoint: Path | None = None, seed: int = 0, rate_factor: float = 1.0,
                 blend: str | None = "rtc", log=print) -> dict[str, Any]:
    from qwen_vla_ros.embodiment.spec import load_embodiment
    from qwen_vla_ros.episodes import execution_params
    from qwen_vla_ros.replay.summary import plot, read_aloha_bag, summarize
    from qwen_vla_ros.ros.bag_recorder import demo_topics

    out.mkdir(parents=True, exist_ok=True)
    ckpt = ensure_checkpoint(out, checkpoint, seed)
    bag = out / "bag"
    spec = load_embodiment("aloha")
    values = {"checkpoint": str(ckpt), "seed": str(seed), "rate_factor": str(rate_factor)}
    with running_bringup("aloha_sim", values, bag,
                         lambda n: demo_topics(spec, sorted(n["aloha_sim"].camera_map)),
                         execution_params(blend)) as (nodes, mode):
        sim = nodes["aloha_sim"]
        log(f"demo: {seconds:g} s of sim time; TELEOP (scripted leader) until "
            f"{teleop_seconds:g} s, then POLICY ({ckpt})")
        mode("engage_teleop")
        wait_sim(sim, teleop_seconds)
        mode("engage_policy")
        log(f"demo: POLICY engaged at sim time {sim.now_sim():.2f} s")
        wait_sim(sim, seconds)
        mode("hold")
    data = read_aloha_bag(bag, spec)
    summary = summarize(data, spec)
    summary["checkpoint"] = str(ckpt)
    summary["bag"] = str(bag)
    summary["plot"] = str(plot(data, spec, out / "demo.png"))
    return write_summary(out, summary)


def format_summary(s: dict[str, Any]) -> str:
    h = s.get("handover") or {}
    inf = s.get("inference_ms", {})
    return aligned([
        ("times in", str(s.get("time_base", "?"))),
        ("control rate", f"{s.get('control_rate_hz', float('nan')):.1f} Hz "
                         f"({s['commands']} commands; period p99 "
                         f"{s.get('command_period_ms_p99', 0):.1f} ms)"),
        ("inference latency", f"p50 {inf.get('p50')} ms, p99 {inf.get('p99')} ms "
                              f"({s['chunks']} chunks)"),
        ("observation age", f"p50 {s['observation_age_ms']['p50']} ms, "
                            f"p99 {s['observation_age_ms']['p99']} ms"),
        ("mode transitions", ", ".join(f"{m['mode']}@{m['t']:.2f}s"
                                       for m in s["mode_transitions"])),
        ("handover jump", f"{h.get('max_jump', float('nan')):.4f} ({h.get('max_jump_joint')}; "
                          f"{h.get('max_jump_over_step_limit', float('nan')):.2f} x the "
                          "per-step limit; from the measured pose)"),
        ("task success", f"{s['task_success']} (by the mode driving at episode end)"),
        ("bag", s["bag"]),
        ("plot", s["plot"]),
    ])
