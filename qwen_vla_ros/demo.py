"""The main job: the simulated ALOHA stack closed-loop, recorded and summarised.

Starts the ``aloha_sim`` bringup in one process (sim, scripted leader, aloha_adapter,
policy_node, mode_manager), engages TELEOP (the scripted leader drives the followers through
the adapter), switches to POLICY through the mode service after ``teleop_seconds`` of sim time,
then HOLD at the end. Everything is recorded to ``OUT/bag`` (MCAP, readable by rosbags), then
read back for ``OUT/summary.json`` and ``OUT/demo.png`` (commands vs measured joints, modes
shaded). A tiny random-init checkpoint is made in ``OUT/checkpoint`` if none is given: it is
not trained, so POLICY is expected to move safely, not to solve the task.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qwen_vla_ros.paths import share_dir


def ensure_checkpoint(out: Path, checkpoint: Path | None, seed: int,
                      embodiment: str = "aloha") -> Path:
    """The checkpoint the demo runs: the given one, else the trained one shipped in
    checkpoints/ (ALOHA), else a random-init tiny one. A given or shipped one is loaded first,
    so a bad one is an error here, not a policy_node that never publishes."""
    if checkpoint is None and embodiment == "aloha":
        from qwen_vla_ros.paths import shipped_checkpoint

        checkpoint = shipped_checkpoint()
    if checkpoint is not None:
        from qwen_vla_ros.errors import CheckpointError
        from qwen_vla_ros.model.checkpoint import load_policy

        policy = load_policy(checkpoint)
        if embodiment not in policy.embodiments:
            raise CheckpointError(f"{checkpoint}: no '{embodiment}' embodiment (has "
                                  f"{sorted(policy.embodiments)})")
        del policy
        return checkpoint
    path = out / "checkpoint"
    if not (path / "qwen_vla.json").exists():
        from qwen_vla_ros.model.presets import build_preset

        build_preset("tiny", [embodiment], seed=seed).save_pretrained(path)
    return path


def _call(client) -> None:
    from qwen_vla_ros.ros.services import call_trigger

    response = call_trigger(client)
    if not response.success:
        from qwen_vla_ros.errors import QwenVLAError

        raise QwenVLAError(f"service {client.srv_name} refused: {response.message}")


@contextmanager
def running_bringup(name: str, values: dict[str, str], bag: Path,
                    topics: Callable[[dict[str, Any]], list], node_extra: dict[str, dict]
                    ) -> Iterator[tuple[dict[str, Any], Callable[[str], None]]]:
    """A bringup's nodes in this process, spinning, with a probe recording ``topics(nodes)``
    to ``bag``. Yields (nodes by name, mode(service)): ``mode("engage_policy")`` calls
    /mode_manager/engage_policy. On exit: stop spinning, close the bag, destroy the nodes."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE",
                          str(share_dir() / "config" / "fastdds_shm.xml"))
    import rclpy
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    from qwen_vla_ros.bringup import create_node, load_bringup
    from qwen_vla_ros.nodes import spinning
    from qwen_vla_ros.ros.bag_recorder import BagRecorder

    if bag.exists():
        shutil.rmtree(bag)
    entries = load_bringup(name).resolve(values)
    rclpy.init()
    nodes: list = []
    try:
        for e in entries:
            nodes.append(create_node(e, node_extra.get(e.executable)))
        by_name = {n.get_name(): n for n in nodes}
        probe = rclpy.create_node("demo", parameter_overrides=[
            Parameter("use_sim_time", value=True)])
        nodes.append(probe)
        recorder = BagRecorder(probe, bag, topics(by_name))
        clients = {n: probe.create_client(Trigger, f"/mode_manager/{n}")
                   for n in ("engage_teleop", "engage_policy", "hold")}
        try:
            with spinning(*nodes):
                yield by_name, lambda service: _call(clients[service])
                time.sleep(0.3)  # let the last messages reach the recorder
        finally:
            recorder.close()
    finally:
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def run_sim_demo(out: Path, seconds: float = 20.0, teleop_seconds: float = 9.5,
                 checkpoint: Path | None = None, seed: int = 0, rate_factor: float = 1.0,
                 log=print) -> dict[str, Any]:
    from qwen_vla_ros.embodiment.spec import load_embodiment
    from qwen_vla_ros.replay.summary import plot, read_aloha_bag, summarize
    from qwen_vla_ros.ros.bag_recorder import demo_topics

    out.mkdir(parents=True, exist_ok=True)
    ckpt = ensure_checkpoint(out, checkpoint, seed)
    bag = out / "bag"
    spec = load_embodiment("aloha")
    values = {"checkpoint": str(ckpt), "seed": str(seed), "rate_factor": str(rate_factor)}
    with running_bringup("aloha_sim", values, bag,
                         lambda n: demo_topics(spec, sorted(n["aloha_sim"].camera_map)),
                         {"policy_node": {"torch_threads": 1}}) as (nodes, mode):
        sim = nodes["aloha_sim"]
        log(f"demo: {seconds:g} s of sim time; TELEOP (scripted leader) until "
            f"{teleop_seconds:g} s, then POLICY ({ckpt})")
        mode("engage_teleop")
        while sim.now_sim() < teleop_seconds:
            time.sleep(0.05)
        mode("engage_policy")
        log(f"demo: POLICY engaged at sim time {sim.now_sim():.2f} s")
        while sim.now_sim() < seconds:
            time.sleep(0.05)
        mode("hold")
    data = read_aloha_bag(bag, spec)
    summary = summarize(data, spec)
    summary["checkpoint"] = str(ckpt)
    summary["bag"] = str(bag)
    summary["plot"] = str(plot(data, spec, out / "demo.png"))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def format_summary(s: dict[str, Any]) -> str:
    h = s.get("handover") or {}
    inf = s.get("inference_ms", {})
    lines = [
        f"times in           {s.get('time_base', '?')}",
        f"control rate       {s.get('control_rate_hz', float('nan')):.1f} Hz "
        f"({s['commands']} commands; period p99 {s.get('command_period_ms_p99', 0):.1f} ms)",
        f"inference latency  p50 {inf.get('p50')} ms, p99 {inf.get('p99')} ms "
        f"({s['chunks']} chunks)",
        f"observation age    p50 {s['observation_age_ms']['p50']} ms, "
        f"p99 {s['observation_age_ms']['p99']} ms",
        "mode transitions   " + ", ".join(f"{m['mode']}@{m['t']:.2f}s"
                                          for m in s["mode_transitions"]),
        f"handover jump      {h.get('max_jump', float('nan')):.4f} ({h.get('max_jump_joint')}; "
        f"{h.get('max_jump_over_step_limit', float('nan')):.2f} x the per-step limit; "
        "from the measured pose)",
        f"task success       {s['task_success']} (by the mode driving at episode end)",
        f"bag                {s['bag']}",
        f"plot               {s['plot']}",
    ]
    return "\n".join(lines)
