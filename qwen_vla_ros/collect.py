"""Collect demonstrations: scripted teleop episodes in the simulated ALOHA, one rosbag2 each.

Runs the ``aloha_sim`` bringup's sim, scripted leader, aloha_adapter and mode_manager (no
policy) in one process, as ``qwen-vla-ros demo`` does. Per episode (seed ``seed_start + i``):
HOLD, a new bag ``OUT/episode_SEED`` (MCAP), reset the sim to that seed, TELEOP (the adapter
ramps from the measured pose; the scripted leader demonstrates), wait for the sim's episode
result, then ``/collect/episode`` (std_msgs/String JSON: seed, task, instruction, success,
max_reward; latched) is recorded into the same bag and it is closed. Failed episodes are kept
and marked. The bags hold the topics a real-robot recording has (docs/replay.md) plus the
sim's episode topics; nothing sim-only is needed to train from them.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_INSTRUCTION = "transfer the red cube to the other arm"
TASKS = ("transfer_cube",)  # tasks the scripted leader can demonstrate
EPISODE_TOPIC = "/collect/episode"


def episode_dir(out: Path, seed: int) -> Path:
    return out / f"episode_{seed:05d}"


def collect(out: Path, task: str = "transfer_cube", episodes: int = 10, seed_start: int = 0,
            instruction: str = DEFAULT_INSTRUCTION, rate_factor: float = 1.0,
            timeout_s: float = 120.0, progress: bool = True, log=print) -> dict[str, Any]:
    """Record ``episodes`` teleop episodes; returns the summary (also ``OUT/collect.json``)."""
    import os

    from qwen_vla_ros.paths import share_dir

    if task not in TASKS:
        raise ValueError(f"no scripted demonstrator for task '{task}'; have {list(TASKS)}")
    if episodes < 1:
        raise ValueError("--episodes must be >= 1")
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE",
                          str(share_dir() / "config" / "fastdds_shm.xml"))
    import rclpy
    from rclpy.parameter import Parameter
    from std_msgs.msg import String
    from std_srvs.srv import Trigger
    from tqdm import tqdm

    from qwen_vla_ros.bringup import create_node, load_bringup
    from qwen_vla_ros.demo import _call
    from qwen_vla_ros.nodes import spinning
    from qwen_vla_ros.ros import qos
    from qwen_vla_ros.ros.bag_recorder import BagRecorder, demo_topics

    out.mkdir(parents=True, exist_ok=True)
    entries = [e for e in load_bringup("aloha_sim").resolve({
        "seed": str(seed_start), "rate_factor": str(rate_factor)})
        if e.executable != "policy_node"]
    extra = {"aloha_sim": {"task": task, "auto_reset": False}}
    rclpy.init()
    nodes: list = []
    results: dict[int, dict] = {}
    got = threading.Condition()
    started = time.monotonic()
    try:
        for e in entries:
            nodes.append(create_node(e, extra.get(e.executable)))
        spec = next(n for n in nodes if n.get_name() == "aloha_adapter").spec
        probe = rclpy.create_node("collect", parameter_overrides=[
            Parameter("use_sim_time", value=True)])
        nodes.append(probe)

        def on_result(msg: String) -> None:
            r = json.loads(msg.data)
            with got:
                results[int(r["seed"])] = r
                got.notify_all()

        probe.create_subscription(String, "/aloha_sim/episode_result", on_result, qos.COMMAND)
        meta_pub = probe.create_publisher(String, EPISODE_TOPIC, qos.LATCHED)
        topics = [*demo_topics(spec, spec.cameras), (EPISODE_TOPIC, String, qos.LATCHED)]
        first = episode_dir(out, seed_start)
        for seed in range(seed_start, seed_start + episodes):
            if episode_dir(out, seed).exists():
                shutil.rmtree(episode_dir(out, seed))
        recorder = BagRecorder(probe, first, topics)
        clients = {n: probe.create_client(Trigger, f"/mode_manager/{n}")
                   for n in ("engage_teleop", "hold")}
        reset = probe.create_client(Trigger, "/aloha_sim/reset")
        summary: list[dict[str, Any]] = []
        bar = tqdm(total=episodes, unit="ep", disable=not progress, desc="collect")
        with spinning(*nodes):
            for i in range(episodes):
                seed = seed_start + i
                if i > 0:
                    _call(clients["hold"])
                    recorder.restart(episode_dir(out, seed))
                    _call(reset)  # the sim's next seed: seed_start + i
                _call(clients["engage_teleop"])
                with got:
                    if not got.wait_for(lambda s=seed: s in results, timeout_s):
                        raise TimeoutError(f"episode seed {seed}: no result after "
                                           f"{timeout_s:g} s")
                r = results[seed]
                meta = {"seed": seed, "task": task, "instruction": instruction,
                        "success": bool(r["success"]), "max_reward": int(r["max_reward"]),
                        "source": "qwen-vla-ros collect (scripted leader, aloha_sim)"}
                n_meta = recorder.counts.get(EPISODE_TOPIC, 0)
                meta_pub.publish(String(data=json.dumps(meta)))
                deadline = time.monotonic() + 5
                while recorder.counts.get(EPISODE_TOPIC, 0) <= n_meta and \
                        time.monotonic() < deadline:
                    time.sleep(0.01)  # the recorder writes it on the executor thread
                summary.append(meta)
                bar.update(1)
                bar.set_postfix(success=f"{sum(m['success'] for m in summary)}/{i + 1}")
            _call(clients["hold"])
        bar.close()
        recorder.close()
    finally:
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    minutes = (time.monotonic() - started) / 60
    result = {"task": task, "episodes": len(summary),
              "successes": sum(m["success"] for m in summary), "minutes": round(minutes, 2),
              "seeds": [m["seed"] for m in summary], "per_episode": summary,
              "rate_factor": rate_factor}
    (out / "collect.json").write_text(json.dumps(result, indent=1))
    log(f"collected {result['episodes']} episodes of {task} (seeds {seed_start}.."
        f"{seed_start + episodes - 1}), {result['successes']} successful, "
        f"{minutes:.1f} min -> {out}")
    return result
