"""Record topics to a rosbag2 (MCAP) file without rosbag2: rclpy raw subscriptions + rosbags.

Subscriptions are created with ``raw=True``, so the bag holds the exact CDR bytes that were
on the wire (rclpy's re-serialisation of a message is not byte-identical to what was
received). Timestamps are receive times (wall clock, ns), as ``ros2 bag record`` writes them.
The typestore (with the types rosbags lacks) is replay/typestore.py's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from qwen_vla_ros.replay.typestore import typestore
from qwen_vla_ros.ros import qos


def ros_type_name(msg_cls) -> str:
    module = msg_cls.__module__.split(".")[0]
    return f"{module}/msg/{msg_cls.__name__}"


def _qos(profile):
    """rclpy QoSProfile -> rosbags Qos (the enums share rmw's values)."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    def t(d) -> QosTime:
        ns = int(d.nanoseconds)
        return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)

    return Qos(QosHistory(int(profile.history)), int(profile.depth),
               QosReliability(int(profile.reliability)), QosDurability(int(profile.durability)),
               t(profile.deadline), t(profile.lifespan), QosLiveliness(int(profile.liveliness)),
               t(profile.liveliness_lease_duration),
               bool(profile.avoid_ros_namespace_conventions))


def offered_qos(node, topic: str, fallback) -> tuple:
    """What the topic's publishers offer (one entry each, as rosbag2 records them); the
    subscription's own profile when no publisher is in the graph any more."""
    infos = node.get_publishers_info_by_topic(topic)
    return tuple(_qos(i.qos_profile) for i in infos) or (_qos(fallback),)


class BagRecorder:
    """Subscribe ``topics`` ([(name, msg class, qos)]) on ``node`` and write an MCAP bag."""

    def __init__(self, node, path: Path, topics: Sequence[tuple[str, type, object]],
                 on_message: Callable[[str, bytes, int], None] | None = None) -> None:
        self.node = node
        self.store = typestore()
        self.lock = threading.Lock()
        self.written = threading.Condition(self.lock)  # notified after every write
        self.on_message = on_message
        self.topics = {name: (ros_type_name(cls), profile) for name, cls, profile in topics}
        self._open(Path(path))
        for name, cls, profile in topics:
            node.create_subscription(cls, name, self._callback(name), profile, raw=True)

    def _open(self, path: Path) -> None:
        from qwen_vla_ros.replay.bagwriter import Rosbag2Writer

        self.path = path
        self.writer = Rosbag2Writer(self.path)
        self.writer.open()
        self.counts: dict[str, int] = {}
        # A topic joins the bag with its first message, with its publishers' offered QoS
        # (as ros2 bag record does): the publishers are known by then.
        self.connections: dict[str, object] = {}
        self.closed = False

    def _connection(self, topic: str):
        conn = self.connections.get(topic)
        if conn is None:
            typename, profile = self.topics[topic]
            conn = self.connections[topic] = self.writer.add_connection(
                topic, typename, typestore=self.store, serialization_format="cdr",
                offered_qos_profiles=offered_qos(self.node, topic, profile))
        return conn

    def restart(self, path: Path) -> None:
        """Close the current bag and record on into a new one at ``path`` (episodes)."""
        with self.lock:
            if not self.closed:
                self.writer.close()
            self._open(Path(path))

    def _callback(self, topic: str):
        def cb(raw: bytes) -> None:
            stamp = time.time_ns()
            with self.lock:
                if self.closed:
                    return
                self.writer.write(self._connection(topic), stamp, bytes(raw))
                self.counts[topic] = self.counts.get(topic, 0) + 1
                self.written.notify_all()
            if self.on_message is not None:
                self.on_message(topic, raw, stamp)
        return cb

    def wait_count(self, topic: str, n: int, timeout: float) -> bool:
        """Whether the current bag holds ``n`` messages of ``topic`` within ``timeout`` s."""
        with self.written:
            return self.written.wait_for(lambda: self.counts.get(topic, 0) >= n, timeout)

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.writer.close()


def demo_topics(spec, cameras: Sequence[str]) -> list[tuple[str, type, object]]:
    """The topic set replay needs (docs/replay.md) for the ALOHA stack."""
    from diagnostic_msgs.msg import DiagnosticArray
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Bool, Int32, String
    from trajectory_msgs.msg import JointTrajectory

    topics: list[tuple[str, type, object]] = [
        ("/clock", Clock, 10),
        ("/policy_node/action_chunk", JointTrajectory, qos.COMMAND),
        ("/policy_node/observation_info", String, qos.COMMAND),
        ("/policy_node/instruction", String, qos.COMMAND),
        ("/aloha_adapter/predicted_joint_states", JointState, qos.COMMAND),
        ("/aloha_adapter/state", String, qos.LATCHED),
        ("/mode_manager/mode", String, qos.LATCHED),
        ("/diagnostics", DiagnosticArray, qos.COMMAND),
        ("/aloha_sim/episode", String, qos.LATCHED),
        ("/aloha_sim/episode_result", String, qos.COMMAND),
        ("/aloha_sim/reward", Int32, qos.COMMAND),
        ("/aloha_sim/success", Bool, qos.LATCHED),
    ]
    for robot in spec.robots:
        topics += [(f"/{robot}/joint_states", JointState, qos.SENSOR),
                   (f"/{robot}/commands/joint_group", JointGroupCommand, qos.COMMAND),
                   (f"/{robot}/commands/joint_single", JointSingleCommand, qos.COMMAND)]
        leader = spec.leader_of(robot)
        if leader is not None:
            topics.append((f"/{leader.robot}/joint_states", JointState, qos.SENSOR))
    topics += [(f"/{c}/image_raw", Image, qos.SENSOR) for c in cameras]
    return topics
