"""``qwen-vla-ros play``: publish a bag's messages and /clock, for live debugging where
``ros2 bag play`` is not installed.

Messages go out as the recorded CDR bytes (no re-serialisation) at the recorded pace times
``rate``. /clock: a bag that recorded /clock (a sim-time stack) has it republished like any
topic, so stamps and clock agree as they did; otherwise /clock is generated from the log time
at 100 Hz, as ``ros2 bag play --clock`` does. Topics recorded with transient-local QoS (and
std_msgs topics when a bag has no QoS record) are republished latched, so late subscribers
still get the mode and the instruction. Types without a Python message class here are
skipped and listed.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qwen_vla_ros.replay.bagio import BagError, BagReadError, open_bag

CLOCK_HZ = 100.0


def message_class(typename: str):
    pkg, kind, name = typename.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def play(bag: Path, rate: float = 1.0, topics: Sequence[str] | None = None,
         clock: str = "auto", start: float = 0.0, loop: bool = False,
         log=print, stop=None) -> dict[str, Any]:
    """Publish ``bag``; returns counts. ``stop``: an Event that ends playback early."""
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    source = open_bag(bag)
    for w in source.warnings:
        log(f"play: {w}")
    wanted = [t for t in (topics or source.topics) if t in source.topics]
    if topics and len(wanted) < len(topics):
        raise BagError(f"topics not in the bag: {sorted(set(topics) - set(wanted))}")
    if clock == "auto":
        clock = "recorded" if "/clock" in source.topics else "log"
    if clock == "recorded" and "/clock" not in source.topics:
        raise BagError("--clock recorded: the bag has no /clock")
    if clock == "log":
        wanted = [t for t in wanted if t != "/clock"]  # one clock only
    started = rclpy.ok()
    if not started:
        rclpy.init()
    node = rclpy.create_node("bag_player")
    pubs, skipped = {}, {}
    for topic in wanted:
        typ = source.topics[topic]
        try:
            cls = message_class(typ)
        except (ImportError, AttributeError, ValueError):
            skipped[topic] = typ
            continue
        latched = topic in source.latched or (not source.latched and typ.startswith("std_msgs/"))
        qos = QoSProfile(depth=1 if latched else 10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                                     else DurabilityPolicy.VOLATILE))
        pubs[topic] = node.create_publisher(cls, topic, qos)
    for topic, typ in skipped.items():
        log(f"play: {topic}: no message class for {typ} here: skipped")
    clock_pub = node.create_publisher(Clock, "/clock", 10) if clock == "log" else None
    stats = {"messages": 0, "skipped_topics": len(skipped), "wall_s": 0.0}
    t_start = time.monotonic()
    try:
        time.sleep(0.5)  # let subscribers discover the publishers
        while True:
            try:
                _play_once(source, pubs, clock_pub, rate, start, stats, stop)
            except BagReadError as exc:
                log(f"play: stopped: {exc}")
                stats["error"] = str(exc)
                break
            if not loop or (stop is not None and stop.is_set()):
                break
    finally:
        stats["wall_s"] = time.monotonic() - t_start
        node.destroy_node()
        if not started and rclpy.ok():
            rclpy.shutdown()
    return stats


def _play_once(source, pubs, clock_pub, rate, start, stats, stop) -> None:
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    from qwen_vla_ros.ros.conversions import sec_to_stamp

    t0_ns = source.start_ns + int(start * 1e9)
    wall0 = time.monotonic()
    next_clock = 0.0

    def bag_now() -> float:  # log time (s) the playback has reached
        return t0_ns * 1e-9 + (time.monotonic() - wall0) * rate

    def wait_until(log_ns: int) -> None:
        nonlocal next_clock
        due = wall0 + (log_ns - t0_ns) * 1e-9 / rate
        while True:
            now = time.monotonic()
            if clock_pub is not None and now >= next_clock:
                clock_pub.publish(Clock(clock=sec_to_stamp(bag_now(), Time)))
                next_clock = now + 1.0 / CLOCK_HZ
            if now >= due or (stop is not None and stop.is_set()):
                return
            time.sleep(min(due - now, 1.0 / CLOCK_HZ if clock_pub is not None else 0.05))

    for topic, log_ns, raw in source.messages(list(pubs)):
        if log_ns < t0_ns:
            continue
        wait_until(log_ns)
        if stop is not None and stop.is_set():
            return
        pubs[topic].publish(bytes(raw))
        stats["messages"] += 1
