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
import time
from pathlib import Path
from typing import Any

DEFAULT_INSTRUCTION = "transfer the red cube to the other arm"
TASKS = ("transfer_cube", "vln_goto")  # tasks a scripted demonstrator can show
EPISODE_TOPIC = "/collect/episode"


def episode_dir(out: Path, seed: int) -> Path:
    return out / f"episode_{seed:05d}"


def collect(out: Path, task: str = "transfer_cube", episodes: int = 10, seed_start: int = 0,
            instruction: str = DEFAULT_INSTRUCTION, rate_factor: float = 1.0,
            timeout_s: float = 120.0, progress: bool = True, log=print,
            disturbance: float = 0.0, lockstep_timeout_s: float = 1.0,
            search: bool = False, detours: float = 0.0, colours: str = "",
            beside: bool = False) -> dict[str, Any]:
    """Record ``episodes`` teleop episodes; returns the summary (also ``OUT/collect.json``).
    ``disturbance`` (rad, transfer_cube/insertion): aloha_sim's ``disturbance_rad``, recovery
    data; each episode's record says which it was. ``lockstep_timeout_s`` (arm tasks):
    aloha_sim's, the sim steps with the teleop commands (sim/lockstep.py), so a busy machine
    slows the collection instead of failing demonstrations; 0: on its wall timer.
    ``search`` (vln_goto): the demonstrator turns until it sees the named object first
    (``sim.vln_task.ScriptedNavigator``); ``detours`` (vln_goto): the share of episodes where
    it is pushed off its path once and recovers (recovery data, ``sim.vln_task.Detour``);
    ``colours`` (vln_goto, e.g. "red,green,blue,yellow"): each of the ``episodes`` start poses
    once per colour, so only the named object differs between them; ``beside`` (with
    ``colours``): each start beside one of the colours' objects, once per other colour."""
    if task not in TASKS:
        raise ValueError(f"no scripted demonstrator for task '{task}'; have {list(TASKS)}")
    if episodes < 1:
        raise ValueError("--episodes must be >= 1")
    if disturbance != 0.0 if task == "vln_goto" else (search or detours != 0.0 or colours
                                                     or beside):
        raise ValueError("--disturbance is for the arm tasks; --search, --detours, --colours "
                         f"and --beside for vln_goto (task '{task}')")
    if beside and len(colours.split(",")) < 2:
        raise ValueError("--beside needs --colours with two or more colours (the neighbour "
                         "and at least one to name)")
    if task == "vln_goto":  # the mobile base in its room (vln_episodes.py)
        from qwen_vla_ros.sim.vln_task import parse_colours
        from qwen_vla_ros.vln_episodes import collect_vln

        return collect_vln(out, episodes, seed_start, rate_factor, progress, log, search,
                           detours, parse_colours(colours), beside)
    from std_msgs.msg import String
    from tqdm import tqdm

    from qwen_vla_ros.episodes import episode_stack
    from qwen_vla_ros.ros import qos
    from qwen_vla_ros.ros.bag_recorder import BagRecorder, demo_topics

    out.mkdir(parents=True, exist_ok=True)
    for seed in range(seed_start, seed_start + episodes):
        if episode_dir(out, seed).exists():
            shutil.rmtree(episode_dir(out, seed))
    started = time.monotonic()
    summary: list[dict[str, Any]] = []
    if disturbance < 0:
        raise ValueError("--disturbance must be >= 0 (rad)")
    if lockstep_timeout_s < 0:
        raise ValueError("--lockstep-timeout must be >= 0 (s)")
    sim_params = {"disturbance_rad": float(disturbance),
                  "lockstep_timeout_s": float(lockstep_timeout_s)}
    with episode_stack(seed_start, task, rate_factor, drop=("policy_node",),
                       extra={"aloha_sim": sim_params}) as stack:
        spec = stack.nodes["aloha_adapter"].spec
        meta_pub = stack.probe.create_publisher(String, EPISODE_TOPIC, qos.LATCHED)
        recorder = BagRecorder(stack.probe, episode_dir(out, seed_start),
                               [*demo_topics(spec, spec.cameras),
                                (EPISODE_TOPIC, String, qos.LATCHED)])
        bar = tqdm(total=episodes, unit="ep", disable=not progress, desc="collect")
        try:
            for i in range(episodes):
                if i > 0:  # the new bag first: the reset's episode message lands in it
                    stack.mode("hold")
                    recorder.restart(episode_dir(out, seed_start + i))
                seed = stack.start(i)
                stack.mode("engage_teleop")
                r = stack.wait_result(seed, timeout_s)
                meta = {"seed": seed, "task": task, "instruction": instruction,
                        "success": bool(r["success"]), "max_reward": int(r["max_reward"]),
                        "disturbance_rad": float(disturbance),
                        "lockstep_timeout_s": float(lockstep_timeout_s),
                        "source": "qwen-vla-ros collect (scripted leader, aloha_sim)"}
                record_meta(recorder, meta_pub, meta)
                summary.append(meta)
                bar.update(1)
                bar.set_postfix(success=f"{sum(m['success'] for m in summary)}/{i + 1}")
        except KeyboardInterrupt:
            bar.close()
            discard_unfinished(recorder, len(summary), log)
            raise
        finally:
            bar.close()
            recorder.close()
    return summarize(out, task, summary, started, rate_factor, log)


def discard_unfinished(recorder, kept: int, log=print) -> None:
    """After an interruption (Ctrl-C): close the bag being recorded and remove it unless its
    episode record was written -- a demonstration cut short would train as a whole one (a bag
    without ``/collect/episode`` is read as a recording of its own)."""
    recorder.close()
    if recorder.counts.get(EPISODE_TOPIC, 0) == 0 and recorder.path.exists():
        shutil.rmtree(recorder.path)
        log(f"collect interrupted: {recorder.path.name} (cut short) removed; {kept} "
            "episode(s) kept")


def record_meta(recorder, publisher, meta: dict[str, Any], timeout: float = 30.0) -> None:
    """Publish the episode's ``/collect/episode`` and wait until the recorder wrote it (it
    writes on the executor thread) before the bag is closed: a TimeoutError, never a bag
    without its seed and success."""
    from std_msgs.msg import String

    n_meta = recorder.counts.get(EPISODE_TOPIC, 0)
    publisher.publish(String(data=json.dumps(meta)))
    if not recorder.wait_count(EPISODE_TOPIC, n_meta + 1, timeout):
        raise TimeoutError(f"{recorder.path}: {EPISODE_TOPIC} not recorded within "
                           f"{timeout:g} s")


def summarize(out: Path, task: str, rows: list[dict[str, Any]], started: float,
              rate_factor: float, log=print) -> dict[str, Any]:
    """``OUT/collect.json`` and the summary line."""
    minutes = (time.monotonic() - started) / 60
    seeds = [m["seed"] for m in rows]
    result = {"task": task, "episodes": len(rows),
              "successes": sum(m["success"] for m in rows), "minutes": round(minutes, 2),
              "seeds": seeds, "per_episode": rows, "rate_factor": rate_factor}
    (out / "collect.json").write_text(json.dumps(result, indent=1))
    log(f"collected {len(rows)} episodes of {task} (seeds {seeds[0]}..{seeds[-1]}), "
        f"{result['successes']} successful, {minutes:.1f} min -> {out}")
    return result
