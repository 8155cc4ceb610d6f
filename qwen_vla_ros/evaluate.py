"""Evaluate a checkpoint closed loop: aloha_sim + policy_node + aloha_adapter (POLICY from the
start pose of each episode) through the full ROS path, one episode per seed.

Writes ``OUT/eval.json``: success rate; per episode the seed, success, max reward, time to
success (sim s), chunks, inference p50/p99, and the largest (and p99) step between
consecutive arm commands as the drivers received them, in units of the per-step velocity
limit (chunk boundaries show there); the seeds the checkpoint was trained on (its
``train_log.json``), which must not overlap the evaluated ones; the sim's rate factor.
``OUT/eval.png``: reward over time per episode.

If CPU inference is slower than the sim, slow the sim (``rate_factor`` < 1): the report says
which rate ran. ``paced``: the sim waits for the policy (runtime/pacing.py) and for the
adapter's commands (sim/lockstep.py), so the model's own time does not count and a policy
``added_latency_ms`` is the exact delay in sim time: the figures no longer depend on how
fast or busy the machine is (``rate_factor`` is then the fastest the sim may go; vln_goto:
base_sim waits for navigation_node, vln_episodes.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.results import wilson_interval
from qwen_vla_ros.runtime.executor import execution_stats

DEFAULT_INSTRUCTION = "transfer the red cube to the other arm"
PACE_TIMEOUT_S = 10.0  # wall s a paced sim waits for a grant (a first chunk, a slow model)


def paced_sim_params(hold_steps: int) -> dict[str, Any]:
    """A simulator's stepping parameters in a paced evaluation (sim/lockstep.PacedSimParams):
    it waits for the policy's grants and its driver's commands, and holds each episode
    ``hold_steps`` after its reset for the policy's first grant."""
    return {"pace_timeout_s": PACE_TIMEOUT_S, "lockstep_timeout_s": 1.0,
            "hold_after_reset_steps": hold_steps}


def trained_seeds(checkpoint: Path, embodiment: str = "aloha") -> list[int]:
    """The seeds of the episodes ``checkpoint`` was trained on for ``embodiment``."""
    log = checkpoint / "train_log.json"
    if not log.exists():
        return []
    info = json.loads(log.read_text())
    if embodiment in info.get("embodiments", {}):  # joint training
        return [int(s) for s in info["embodiments"][embodiment].get("train_seeds", [])]
    if info.get("embodiment", embodiment) != embodiment:
        return []
    return [int(s) for s in info.get("train_seeds", [])]


def evaluate(checkpoint: Path, out: Path, task: str = "transfer_cube", episodes: int = 20,
             seed_start: int = 10_000, instruction: str | None = None,
             rate_factor: float = 1.0, timeout_s: float = 300.0, allow_train_seeds: bool = False,
             blend: str | None = None, policy_params: dict[str, Any] | None = None,
             colours: str = "", paced: bool = False, episode_steps: int | None = None,
             progress: bool = True, log=print) -> dict[str, Any]:
    from tqdm import tqdm

    from qwen_vla_ros.episodes import SETTLE_STEPS, episode_stack, execution_params
    from qwen_vla_ros.model.checkpoint import read_meta

    meta = read_meta(Path(checkpoint))  # a clear error for what is not a checkpoint
    embodiment = "vln" if task == "vln_goto" else "aloha"
    known = meta.get("trained_embodiments", meta.get("embodiments", []))
    if embodiment not in known:
        raise ConfigError(f"{checkpoint} was not trained for the {embodiment} embodiment "
                          f"that {task} needs (has {known})")
    seeds = list(range(seed_start, seed_start + episodes))
    trained = trained_seeds(checkpoint, embodiment)
    overlap = sorted(set(seeds) & set(trained))
    if overlap and not allow_train_seeds:
        raise ConfigError(f"evaluation seeds {overlap[:10]} were trained on "
                          f"({checkpoint}/train_log.json); choose another --seed-start")
    if episode_steps is not None and (task == "vln_goto" or episode_steps < 1):
        raise ConfigError("--episode-steps is a positive number of steps of an arm task")
    out.mkdir(parents=True, exist_ok=True)
    if task == "vln_goto":  # navigation_node drives the base (vln_episodes.py)
        from qwen_vla_ros.sim.vln_task import parse_colours
        from qwen_vla_ros.vln_episodes import evaluate_vln

        return evaluate_vln(checkpoint, out, episodes, seed_start, trained, rate_factor,
                            policy_params, parse_colours(colours), instruction, progress, log,
                            paced=paced)
    if colours:
        raise ConfigError("--colours is for --task vln_goto")
    instruction = instruction or DEFAULT_INSTRUCTION
    rows: list[dict[str, Any]] = []
    traces: list[list[tuple[float, int]]] = []
    started = time.monotonic()
    extra = execution_params(blend)
    extra["policy_node"].update(policy_params or {})
    extra["aloha_sim"] = {} if episode_steps is None else {"episode_steps": episode_steps}
    if paced:
        extra["policy_node"]["pace_sim"] = True
        # each episode from a reset and a held start (EpisodeStack)
        extra["aloha_sim"].update(paced_sim_params(SETTLE_STEPS + 1))
    values = {"checkpoint": str(checkpoint), "instruction": instruction}
    with episode_stack(seed_start, task, rate_factor, drop=("scripted_leader",),
                       values=values, extra=extra) as stack:
        adapter, policy = stack.nodes["aloha_adapter"], stack.nodes["policy_node"]
        sim = stack.nodes["aloha_sim"]
        from qwen_vla_ros.ros.params import require_parameters

        require_parameters(policy, policy_params or {})
        if policy.policy is None:
            raise ConfigError(f"policy_node did not load {checkpoint}: {policy.last_error}")
        spec = adapter.spec
        adapter_blend = adapter.get_parameter("blend").value
        arm_limit = {r: spec.max_velocity()[[i for i in spec.dims_of(r)
                                              if spec.action[i].gripper is None]] * spec.dt
                     for r in spec.robots}
        sent: dict[str, list[np.ndarray]] = {r: [] for r in spec.robots}
        from interbotix_xs_msgs.msg import JointGroupCommand

        from qwen_vla_ros.ros import qos

        for robot in spec.robots:  # what reached the drivers, as they received it
            stack.probe.create_subscription(
                JointGroupCommand, f"/{adapter.profile.followers[robot]}/commands/joint_group",
                lambda m, r=robot: sent[r].append(np.asarray(m.cmd, float)), qos.COMMAND)
        bar = tqdm(total=episodes, unit="ep", disable=not progress, desc="eval")
        for i in range(episodes):
            seed = stack.start(i)
            for v in sent.values():
                v.clear()
            host = policy.host  # the policy's publishers and latency (policy_io.PolicyHost)
            chunks0 = host.published
            host.latency.samples.clear()
            executor = adapter.chunk_executor
            executor.trace = []  # every control tick's command, for the smoothness figures
            counts0 = dict(adapter.chunk_counts)
            stack.engage("engage_policy")
            r = stack.wait_result(seed, timeout_s)
            smooth = execution_stats(executor.trace, adapter.limits.max_velocity * spec.dt,
                                     spec.dt)
            executor.trace = None
            trace = stack.reward_trace()
            t0 = trace[0][0] if trace else 0.0
            success_t = next((t - t0 for t, rw in trace if rw >= 4), None)
            ratios = np.concatenate([
                (np.abs(np.diff(np.array(v), axis=0)) / arm_limit[rb]).max(axis=1)
                for rb, v in sent.items() if len(v) > 1] or [np.zeros(0)])
            rows.append({
                "seed": seed, "success": bool(r["success"]), "max_reward": int(r["max_reward"]),
                "time_to_success_s": success_t, "chunks": host.published - chunks0,
                "commands": sum(len(v) for v in sent.values()),
                "max_step_over_limit": float(ratios.max()) if ratios.size else None,
                "p99_step_over_limit": float(np.percentile(ratios, 99)) if ratios.size
                else None,
                "inference_ms_p50": host.latency.percentile(50),
                "inference_ms_p99": host.latency.percentile(99),
                **smooth,
                # chunks the adapter refused: over on arrival, planned against another plan
                "chunks_stale": adapter.chunk_counts["stale"] - counts0["stale"],
                "chunks_diverged": adapter.chunk_counts["diverged"] - counts0["diverged"],
                # a watchdog that ended POLICY in this episode (docs/reliability.md), or None
                "adapter_fault": adapter.fault or None})
            traces.append(trace)
            bar.update(1)
            bar.set_postfix(success=f"{sum(x['success'] for x in rows)}/{i + 1}")
        bar.close()
    wins = sum(x["success"] for x in rows)
    result = {
        "checkpoint": str(checkpoint), "task": task, "instruction": instruction,
        "episodes": len(rows), "successes": wins, "success_rate": wins / max(len(rows), 1),
        "success_ci95": wilson_interval(wins, len(rows)),
        "seeds": seeds, "trained_seeds": trained_seeds(checkpoint), "rate_factor": rate_factor,
        "policy_params": dict(policy_params or {}),
        "blend": adapter_blend, "paced": paced,
        "episode_steps": sim.episode_steps,
        # paced: times the sim ran free because no grant came for PACE_TIMEOUT_S (wall)
        "pace_timeouts": sim.pace.timeouts if sim.pace is not None else None,
        "minutes": round((time.monotonic() - started) / 60, 2),
        "episodes_with_adapter_fault": sum(x["adapter_fault"] is not None for x in rows),
        "per_episode": rows}
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    plot_eval(traces, rows, out / "eval.png")
    lo, hi = result["success_ci95"]
    log(f"eval: {result['successes']}/{result['episodes']} successful (95 % interval "
        f"{lo:.0%}-{hi:.0%}) on seeds {seeds[0]}..{seeds[-1]} ({checkpoint}) -> "
        f"{out}/eval.json")
    return result


def plot_eval(traces, rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for trace, row in zip(traces, rows, strict=True):
        if not trace:
            continue
        t0 = trace[0][0]
        t = [a - t0 for a, _ in trace]
        ax.step(t, [b for _, b in trace], where="post", alpha=0.7,
                color="#16a34a" if row["success"] else "#dc2626", lw=1)
    ax.set_xlabel("sim time in episode (s)")
    ax.set_ylabel("contact reward (4 = success)")
    ok = sum(r["success"] for r in rows)
    ax.set_title(f"{ok}/{len(rows)} successful (green) by seed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
