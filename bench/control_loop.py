"""50 Hz command stream while a deliberately slow model infers.

The policy (tiny preset, padded with CPU-bound torch work to ``--model-ms``, default 300 ms)
runs in policy_node on its worker thread; trajectory_adapter streams commands at 50 Hz. A
separate recorder process timestamps every command it receives and reports the period error
(|interval - 20 ms|) p50/p99 and missed cycles (intervals beyond 1.5 periods, counted in
periods). Two layouts in one run: adapter in the policy's process (shares its GIL) and adapter
in its own process (as deployed).

    python bench/control_loop.py --seconds 10 --json out/bench_control_loop.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from qwen_vla_ros.results import save_results

EMB = "vx300s_single"
ROOT = Path(__file__).resolve().parents[1]


class SlowPolicy:
    """The real tiny policy, then CPU-bound torch work until ``ms`` have passed."""

    def __init__(self, policy, ms: float) -> None:
        self.policy, self.ms = policy, ms
        import torch

        self._a = torch.randn(256, 256)

    def spec(self, name):
        return self.policy.spec(name)

    def predict(self, obs, **kw):
        import torch

        t0 = time.perf_counter()
        chunk = self.policy.predict(obs, **kw)
        while (time.perf_counter() - t0) * 1e3 < self.ms:
            torch.mm(self._a, self._a)
        chunk.timing_ms["total"] = (time.perf_counter() - t0) * 1e3
        return chunk


def run_stack(seconds: float, model_ms: float, with_adapter: bool, domain: int) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image, JointState

    from qwen_vla_ros.embodiment.spec import load_embodiment
    from qwen_vla_ros.model.presets import build_preset
    from qwen_vla_ros.nodes.mode_manager import ModeManager
    from qwen_vla_ros.nodes.policy_node import PolicyNode
    from qwen_vla_ros.ros import qos
    from qwen_vla_ros.ros.conversions import rgb_to_image
    from qwen_vla_ros.runtime.modes import Mode

    spec = load_embodiment(EMB)
    policy = SlowPolicy(build_preset("tiny", [EMB]), model_ms)
    rclpy.init(domain_id=domain)
    nodes = [PolicyNode(policy=policy, parameter_overrides=[
        Parameter("embodiment", value=EMB), Parameter("inference_rate_hz", value=10.0),
        Parameter("instruction", value="pick up the cube"),
        Parameter("max_observation_age", value=0.5), Parameter("torch_threads", value=1)])]
    modes = ModeManager()
    nodes.append(modes)
    if with_adapter:
        from qwen_vla_ros.nodes.trajectory_adapter import TrajectoryAdapter

        nodes.append(TrajectoryAdapter(cli_args=adapter_args()))
    rig = rclpy.create_node("bench_rig")
    nodes.append(rig)
    cams = [rig.create_publisher(Image, f"{c}/image_raw", qos.SENSOR) for c in spec.cameras]
    js = rig.create_publisher(JointState, "joint_states", qos.SENSOR)
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)

    def pub_cams():
        stamp = rig.get_clock().now().to_msg()
        for p in cams:
            p.publish(rgb_to_image(frame, Image, stamp=stamp))

    def pub_js():
        msg = JointState(name=[d.joint for d in spec.action], position=[0.0] * 6 + [0.0])
        msg.header.stamp = rig.get_clock().now().to_msg()
        js.publish(msg)
    rig.create_timer(1 / 30, pub_cams)
    rig.create_timer(0.02, pub_js)
    ex = SingleThreadedExecutor()
    for n in nodes:
        ex.add_node(n)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    time.sleep(3.0)
    modes._switch(Mode.POLICY, "bench")
    time.sleep(seconds + 2.0)
    ex.shutdown()
    th.join(5)
    for n in nodes:
        n.destroy_node()
    rclpy.shutdown()


def adapter_args() -> list[str]:
    return ["--ros-args", "-r", "/trajectory_adapter/action_chunk:=/policy_node/action_chunk",
            "-r", "mode:=/mode_manager/mode", "-p", f"embodiment:={EMB}"]


def run_adapter(seconds: float, domain: int) -> None:
    import rclpy

    from qwen_vla_ros.nodes.trajectory_adapter import TrajectoryAdapter

    rclpy.init(domain_id=domain)
    node = TrajectoryAdapter(cli_args=adapter_args())
    end = time.monotonic() + seconds + 12.0
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    rclpy.shutdown()


def record(seconds: float, model_ms: float, separate: bool, domain: int) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from trajectory_msgs.msg import JointTrajectory

    from qwen_vla_ros.ros import qos

    env = dict(os.environ)
    env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_shm.xml"))
    base = [sys.executable, __file__, "--seconds", str(seconds), "--domain", str(domain),
            "--model-ms", str(model_ms)]
    procs = [subprocess.Popen([*base, "--role", "stack"] + ([] if separate else
                                                            ["--with-adapter"]), env=env)]
    if separate:
        procs.append(subprocess.Popen([*base, "--role", "adapter"], env=env))
    rclpy.init(domain_id=domain)
    node = rclpy.create_node("bench_recorder")
    times: list[float] = []
    node.create_subscription(JointTrajectory, "joint_trajectory",
                             lambda _m: times.append(time.monotonic()), qos.COMMAND)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    while procs[0].poll() is None:  # until the stack has run its course
        ex.spin_once(timeout_sec=0.01)
    rclpy.shutdown()
    for p in procs:
        p.wait(timeout=60)
    t = np.array(times)
    t = t[t >= t[0] + 1.0] if len(t) else t  # skip the handover second
    t = t[t <= t[0] + seconds] if len(t) else t
    dt = np.diff(t) * 1e3
    err = np.abs(dt - 20.0)
    missed = int(np.sum(np.maximum(np.round(dt / 20.0) - 1, 0)[dt > 30.0]))
    return {"layout": "adapter in its own process" if separate else
            "adapter in the policy's process", "commands": len(t),
            "period_ms_p50": float(np.median(dt)) if len(dt) else None,
            "period_error_ms_p50": float(np.median(err)) if len(err) else None,
            "period_error_ms_p99": float(np.percentile(err, 99)) if len(err) else None,
            "missed_cycles": missed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["main", "stack", "adapter"], default="main")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--model-ms", type=float, default=300.0)
    ap.add_argument("--domain", type=int, default=78)
    ap.add_argument("--with-adapter", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.role == "stack":
        run_stack(a.seconds, a.model_ms, a.with_adapter, a.domain)
        return 0
    if a.role == "adapter":
        run_adapter(a.seconds, a.domain)
        return 0
    results = []
    for separate in (False, True):
        r = record(a.seconds, a.model_ms, separate, a.domain)
        results.append(r)
        print(f"{r['layout']:>32}: {r['commands']} commands, period p50 "
              f"{r['period_ms_p50']:.2f} ms, error p50 {r['period_error_ms_p50']:.2f} ms "
              f"p99 {r['period_error_ms_p99']:.2f} ms, missed cycles {r['missed_cycles']}")
    out = {"model_ms": a.model_ms, "seconds": a.seconds, "rate_hz": 50, "results": results}
    save_results(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
