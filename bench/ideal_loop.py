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

``--against-demo`` also computes each seed's scripted demonstration (sim/scripted.py) and
prints, per second of the episode, how far the executed targets are from it (mean over the
arm joints, rad; the joint furthest off) and the right fingertips' distance to the cube: on
a training seed this separates "cannot reproduce what it was shown" from "does not
generalise". ``--demo`` executes the demonstration itself instead of the policy (a check of
this loop: it should succeed).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from qwen_vla_ros.results import save_results


def seed_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def against_demo(executed: np.ndarray, demo: np.ndarray, tip_cube: list[float],
                 arm: list[int], names: list[str], window: int = 50) -> list[dict]:
    """Per ``window`` steps: mean |executed - demo| over the arm joints (rad), the joint
    furthest off on average (signed), and the right fingertips' distance to the cube at the
    window's end; printed as it goes."""
    out = []
    for w in range(0, len(executed), window):
        d = executed[w:w + window] - demo[w:w + window]
        worst = arm[int(np.argmax(np.abs(d[:, arm]).mean(0)))]
        rec = {"from_s": round(w * 0.02, 2), "mean_abs_rad": float(np.abs(d[:, arm]).mean()),
               "worst": names[worst], "worst_mean_rad": float(d[:, worst].mean()),
               "tip_cube_m": tip_cube[min(w + window, len(tip_cube)) - 1]}
        out.append(rec)
        print(f"  {rec['from_s']:4.1f} s: |target - demo| {rec['mean_abs_rad']:.3f} rad, "
              f"worst {rec['worst']} {rec['worst_mean_rad']:+.3f}; right fingertips to cube "
              f"{rec['tip_cube_m']:.3f} m", flush=True)
    return out


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
    ap.add_argument("--against-demo", action="store_true",
                    help="compare the executed targets with the seed's scripted demonstration")
    ap.add_argument("--demo", action="store_true",
                    help="execute the scripted demonstration instead of the policy")
    ap.add_argument("--json")
    args = ap.parse_args()
    from qwen_vla_ros.cli import _quiet_transformers

    _quiet_transformers()
    from qwen_vla_ros.model.policy import QwenVLAPolicy
    from qwen_vla_ros.runtime.executor import Chunk, ChunkExecutor
    from qwen_vla_ros.runtime.limits import Limits
    from qwen_vla_ros.runtime.observation import Rejection
    from qwen_vla_ros.runtime.policy_loop import PolicyLoop
    from qwen_vla_ros.sim.aloha import DEFAULT_CAMERA_MAP, DT, AlohaSim, fingertip_centre
    from qwen_vla_ros.sim.bridge import InterbotixSimBridge

    policy = QwenVLAPolicy.from_pretrained(args.checkpoint)
    spec = policy.spec("aloha")
    sim = AlohaSim(args.task, image_size=(240, 320))
    bridge = InterbotixSimBridge(spec, sim, "current_based_position")
    lower, upper = spec.lower(), spec.upper()
    arm = [i for i, a in enumerate(spec.action) if a.gripper is None]
    rows = []
    for seed in args.seeds:
        started = time.monotonic()
        demo = None
        if args.against_demo or args.demo:
            from qwen_vla_ros.sim.scripted import scripted_transfer_cube

            demo = scripted_transfer_cube(seed, args.steps)
        executed, tip_cube = [], []
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
                if not isinstance(request, Rejection) and not args.demo:
                    chunk = policy.predict(request.observation, seed=seed * 1000 + k)
                    pending.append((k + args.delay, chunk.actions, request.observation.stamp))
            for item in [p for p in pending if p[0] <= k]:
                pending.remove(item)
                if executor is not None:
                    executor.add_chunk(Chunk(item[1], item[2], spec.dt))
                else:
                    newest = (item[1], item[2])
            if args.demo:
                bridge.target = demo[k].copy()
            elif executor is not None:
                command = executor.step(t)
                if command is not None:
                    bridge.target = np.clip(command.position, lower, upper)
            elif newest is not None:
                i = round((t - newest[1]) / DT)
                bridge.target = np.clip(newest[0][min(i, len(newest[0]) - 1)], lower, upper)
            info = bridge.step()
            if demo is not None:
                executed.append(bridge.target.copy())
                tip_cube.append(float(np.linalg.norm(fingertip_centre(sim.data, "right")
                                                     - sim.data.geom("red_box").xpos)))
            if info.success and success_t is None:
                success_t = t
        row = {"seed": seed, "success": sim.max_reward >= 4,
               "max_reward": int(sim.max_reward), "time_to_success_s": success_t,
               "wall_s": round(time.monotonic() - started, 1)}
        if demo is not None:
            row["against_demo"] = against_demo(np.array(executed), demo, tip_cube, arm,
                                               spec.action_names)
        rows.append(row)
        print(f"seed {seed}: max reward {sim.max_reward}"
              f"{'  success' if sim.max_reward >= 4 else ''}", flush=True)
    result = {"checkpoint": args.checkpoint, "task": args.task, "blend": args.blend,
              "period_steps": args.period, "delay_steps": args.delay, "seeds": args.seeds,
              "successes": sum(r["success"] for r in rows), "episodes": len(rows),
              "per_episode": rows}
    print(f"{result['successes']}/{result['episodes']} successful "
          f"({'the demonstration' if args.demo else args.blend}, chunk every "
          f"{args.period} steps, delay {args.delay})")
    save_results(args.json, result)


if __name__ == "__main__":
    main()
