"""Camera ingest across processes: 3 cameras, 480x640 rgb8, 50 Hz, for N seconds.

Runs the same workload twice in one invocation, with Fast DDS defaults and with the profile
shipped in config/fastdds_shm.xml, and reports per setup the delivered fraction and p50/p99
latency (header stamp -> receive, one clock: same machine). Best-effort (sensor) QoS, as the
policy node subscribes.

    python bench/ingest.py --seconds 5 --json out/bench_ingest.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from qwen_vla_ros.results import save_results

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
ROOT = Path(__file__).resolve().parents[1]


def publisher(seconds: float, rate: float, domain: int) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    from qwen_vla_ros.ros import qos
    from qwen_vla_ros.ros.conversions import rgb_to_image

    rclpy.init(domain_id=domain)
    node = rclpy.create_node("ingest_publisher")
    pubs = [node.create_publisher(Image, f"{c}/image_raw", qos.SENSOR) for c in CAMERAS]
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    msg = rgb_to_image(frame, Image)
    time.sleep(2.0)  # discovery
    period, t_next, end = 1.0 / rate, time.monotonic(), time.monotonic() + seconds
    sent = 0
    while time.monotonic() < end:
        stamp = node.get_clock().now().to_msg()
        for p in pubs:
            msg.header.stamp = stamp
            p.publish(msg)
            sent += 1
        t_next += period
        time.sleep(max(0.0, t_next - time.monotonic()))
    time.sleep(0.5)
    print(json.dumps({"sent": sent}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def subscriber(seconds: float, rate: float, profile: str | None, domain: int) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from qwen_vla_ros.ros import qos
    from qwen_vla_ros.ros.conversions import stamp_to_sec

    rclpy.init(domain_id=domain)
    node = rclpy.create_node("ingest_subscriber")
    lat: list[float] = []

    def cb(msg):
        lat.append(node.get_clock().now().nanoseconds * 1e-9 - stamp_to_sec(msg.header.stamp))
    for c in CAMERAS:
        node.create_subscription(Image, f"{c}/image_raw", cb, qos.SENSOR)
    env = dict(os.environ)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = profile
    proc = subprocess.Popen([sys.executable, __file__, "--role", "publisher", "--seconds",
                             str(seconds), "--rate", str(rate), "--domain", str(domain)],
                            env=env, stdout=subprocess.PIPE, text=True)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    while proc.poll() is None:
        ex.spin_once(timeout_sec=0.05)
    sent = json.loads(proc.stdout.read().strip().splitlines()[-1])["sent"]
    node.destroy_node()
    rclpy.shutdown()
    ms = np.array(lat) * 1e3
    return {"profile": "shipped (config/fastdds_shm.xml)" if profile else "Fast DDS default",
            "sent": sent, "received": len(lat), "delivered": len(lat) / max(sent, 1),
            "latency_ms_p50": float(np.median(ms)) if len(ms) else None,
            "latency_ms_p99": float(np.percentile(ms, 99)) if len(ms) else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["main", "publisher", "subscriber"], default="main")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--domain", type=int, default=77)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.role == "publisher":
        publisher(a.seconds, a.rate, a.domain)
        return 0
    if a.role == "subscriber":
        print(json.dumps(subscriber(a.seconds, a.rate, a.profile, a.domain)), flush=True)
        return 0
    results = []
    for profile in (None, str(ROOT / "config" / "fastdds_shm.xml")):
        env = dict(os.environ)
        env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
        if profile:
            env["FASTRTPS_DEFAULT_PROFILES_FILE"] = profile
        cmd = [sys.executable, __file__, "--role", "subscriber", "--seconds", str(a.seconds),
               "--rate", str(a.rate), "--domain", str(a.domain)]
        if profile:
            cmd += ["--profile", profile]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        p50 = "n/a" if r["latency_ms_p50"] is None else f"{r['latency_ms_p50']:.2f}"
        p99 = "n/a" if r["latency_ms_p99"] is None else f"{r['latency_ms_p99']:.2f}"
        print(f"{r['profile']:>34}: delivered {r['received']}/{r['sent']} "
              f"({100 * r['delivered']:.1f}%), latency p50 {p50} ms, p99 {p99} ms")
    summary = {"cameras": len(CAMERAS), "image": [480, 640, 3], "rate_hz": a.rate,
               "seconds": a.seconds, "qos": "sensor data (best effort)", "results": results}
    save_results(a.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
