"""A checkpoint in an idealised closed loop, without ROS: separates what the model can do from
what the live path (latency, DDS, chunk blending) costs it.

``AlohaSim`` is stepped synchronously at 50 Hz through the xs_sdk bridge (grippers in
current_based_position, as after aloha_adapter's start-up); the observation is built by the
same ``PolicyLoop`` as policy_node's (joint states merged by name, 10 Hz camera frames, the
newest frame per camera); a new chunk every ``--period`` steps; the sim waits for inference.
``--blend newest`` executes the newest chunk from its observation's time (no latency, no
blending); ``ensemble`` / ``rtc`` run the adapters' ``ChunkExecutor`` with that mode instead.
``--delay`` steps of simulated inference delay: a chunk reaches the executor that many steps
after its observation.

    python bench/ideal_loop.py --checkpoint ckpt/tc --seeds 20000-20009 --json out/ideal.json

Use seeds neither trained nor evaluated on (the eval uses 10000+ by default).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from qwen_vla_ros.results import save_results


def seed_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--seeds", type=seed_range, default=seed_range("20000-20009"))
    ap.add_argument("--task", default="transfer_cube")
    ap.add_argument("--instruction", default="transfer the red cube to the other arm")
    ap.add_argument("--period", type=int, default=10, help="control steps between chunks")
    ap.add_argument("--delay", type=int, default=0, help="inference delay in control steps")
    ap.add_argument("--blend", choices=["newest", "ensemble", "rtc"], default="newest")
    ap.add_argument("--steps", type=int, default=450, help="control steps per episode")
    ap.add_argument("--json")
    args = ap.parse_args()
    from qwen_vla_ros.cli import _quiet_transformers

    _quiet_transformers()
    from qwen_vla_ros.model.policy import QwenVLAPolicy
    from qwen_vla_ros.runtime.executor import Chunk, ChunkExecutor
    from qwen_vla_ros.runtime.limits import Limits
    from qwen_vla_ros.runtime.observation import Rejection
    from qwen_vla_ros.runtime.policy_loop import PolicyLoop
    from qwen_vla_ros.sim.aloha import DEFAULT_CAMERA_MAP, DT, AlohaSim
    from qwen_vla_ros.sim.bridge import InterbotixSimBridge

    policy = QwenVLAPolicy.from_pretrained(args.checkpoint)
    spec = policy.spec("aloha")
    sim = AlohaSim(args.task, image_size=(240, 320))
    bridge = InterbotixSimBridge(spec, sim, "current_based_position")
    lower, upper = spec.lower(), spec.upper()
    rows = []
    for seed in args.seeds:
        started = time.monotonic()
        bridge.reset(seed)
        loop = PolicyLoop(spec, 0.3, instruction=args.instruction)
        executor = None
        if args.blend != "newest":
            executor = ChunkExecutor(Limits.from_spec(spec), spec.dt, mode=args.blend)
            executor.reset(bridge.target.copy())  # hold the start pose until a chunk
        newest: tuple[np.ndarray, float] | None = None
        pending: list[tuple[int, np.ndarray, float]] = []  # (arrives at step, actions, stamp)
        success_t = None
        for k in range(args.steps):
            t = k * DT
            for robot in spec.robots:
                names, pos = bridge.joint_state(robot)
                loop.add_joint_state(robot, list(names), pos, t)
            if k % 5 == 0:
                for cam in spec.cameras:
                    loop.add_image(cam, sim.render(DEFAULT_CAMERA_MAP[cam]), t)
            if k % args.period == 0:
                request = loop.request(t)
                if not isinstance(request, Rejection):
                    chunk = policy.predict(request.observation, seed=seed * 1000 + k)
                    pending.append((k + args.delay, chunk.actions, request.observation.stamp))
            for item in [p for p in pending if p[0] <= k]:
                pending.remove(item)
                if executor is not None:
                    executor.add_chunk(Chunk(item[1], item[2], spec.dt))
                else:
                    newest = (item[1], item[2])
            if executor is not None:
                command = executor.step(t)
                if command is not None:
                    bridge.target = np.clip(command.position, lower, upper)
            elif newest is not None:
                i = round((t - newest[1]) / DT)
                bridge.target = np.clip(newest[0][min(i, len(newest[0]) - 1)], lower, upper)
            info = bridge.step()
            if info.success and success_t is None:
                success_t = t
        rows.append({"seed": seed, "success": sim.max_reward >= 4,
                     "max_reward": int(sim.max_reward), "time_to_success_s": success_t,
                     "wall_s": round(time.monotonic() - started, 1)})
        print(f"seed {seed}: max reward {sim.max_reward}"
              f"{'  success' if sim.max_reward >= 4 else ''}", flush=True)
    result = {"checkpoint": args.checkpoint, "task": args.task, "blend": args.blend,
              "period_steps": args.period, "delay_steps": args.delay, "seeds": args.seeds,
              "successes": sum(r["success"] for r in rows), "episodes": len(rows),
              "per_episode": rows}
    print(f"{result['successes']}/{result['episodes']} successful ({args.blend}, chunk every "
          f"{args.period} steps, delay {args.delay})")
    save_results(args.json, result)


if __name__ == "__main__":
    main()
