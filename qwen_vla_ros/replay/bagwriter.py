"""MCAP bags as rosbag2 writes them, written with rosbags (no ROS install needed).

Where rosbags 0.11 differs from rosbag2's own MCAP plugin (rosbag2_storage_mcap, Jazzy), this
writer follows rosbag2:
- each MCAP channel carries ``offered_qos_profiles`` AND ``topic_type_hash`` (the RIHS01 type
  hash; rosbag2_storage_mcap reads it back into ``type_description_hash``);
- ``ros_distro`` is the distro the recording ran on ($ROS_DISTRO, else jazzy), in metadata.yaml
  and in the MCAP's embedded rosbag2 metadata record, instead of "rosbags".
The recorder fills ``offered_qos_profiles`` from the live publishers (ros/bag_recorder.py), as
``ros2 bag record`` does, so ``ros2 bag play`` republishes with the recorded reliability and
durability.
"""

from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path
from typing import ClassVar

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import Channel, McapWriter, write_channel, write_string

from qwen_vla_ros.ros.conversions import sec_to_stamp

ROSBAGS_DISTRO = "ros_distro: rosbags"


def ros_distro() -> str:
    return os.environ.get("ROS_DISTRO") or "jazzy"


class _Rosbag2Mcap(McapWriter):
    def add_connection(self, connection, offered_qos_profiles: str) -> None:
        metadata = BytesIO()
        for key, value in (("offered_qos_profiles", offered_qos_profiles),
                           ("topic_type_hash", connection.digest or "")):
            write_string(metadata, key)
            write_string(metadata, value)
        self.channels.append(Channel(connection.id, connection.msgtype, connection.topic,
                                     connection.ext.serialization_format, metadata.getvalue()))
        self.channel_stats[connection.id] = 0
        write_channel(self.chunk.bio, self.channels[-1], self.schemas)

    def close(self, version: int, metadata: str) -> None:
        super().close(version, metadata.replace(ROSBAGS_DISTRO, f"ros_distro: {ros_distro()}"))


class Rosbag2Writer(Writer):
    """rosbags' Writer, MCAP, bag format version 9, with the differences above."""

    STORAGE_PLUGINS: ClassVar = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: _Rosbag2Mcap}

    def __init__(self, path: Path) -> None:
        super().__init__(path, version=9, storage_plugin=StoragePlugin.MCAP)

    def close(self) -> None:
        super().close()
        text = self.metapath.read_text()
        if ROSBAGS_DISTRO in text:
            self.metapath.write_text(text.replace(ROSBAGS_DISTRO, f"ros_distro: {ros_distro()}"))


class ReplayBagWriter:
    """Output MCAP with rosbags message classes; written sorted by log time at close."""

    TOPICS: ClassVar[dict[str, str]] = {
        "/replay/action_chunk": "trajectory_msgs/msg/JointTrajectory",
        "/replay/predicted_joint_states": "sensor_msgs/msg/JointState",
        "/replay/observation_info": "std_msgs/msg/String",
        "/replay/status": "std_msgs/msg/String"}

    def __init__(self, path: Path, store) -> None:
        self.path, self.store = path, store
        self.pending: list[tuple[int, str, bytes]] = []
        T = store.types
        self.Header, self.Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
        self.Duration = T["builtin_interfaces/msg/Duration"]

    def _stamp(self, t: float):
        return sec_to_stamp(t, self.Time)

    def _add(self, topic: str, log: int, msg) -> None:
        self.pending.append((log, topic, bytes(self.store.serialize_cdr(msg, self.TOPICS[topic]))))

    def string(self, topic: str, log: int, text: str) -> None:
        self._add(topic, log, self.store.types["std_msgs/msg/String"](data=text))

    def trajectory(self, topic: str, log: int, actions: np.ndarray, names: list[str], dt: float,
                   stamp: float) -> None:
        T = self.store.types
        Point = T["trajectory_msgs/msg/JointTrajectoryPoint"]
        empty = np.zeros(0, np.float64)
        points = []
        for k, row in enumerate(actions):
            points.append(Point(positions=np.asarray(row, np.float64), velocities=empty,
                                accelerations=empty, effort=empty,
                                time_from_start=sec_to_stamp(k * dt, self.Duration)))
        msg = T["trajectory_msgs/msg/JointTrajectory"](
            header=self.Header(stamp=self._stamp(stamp), frame_id=""), joint_names=list(names),
            points=points)
        self._add(topic, log, msg)

    def joint_state(self, topic: str, log: int, names: list[str], positions: np.ndarray,
                    stamp: float) -> None:
        empty = np.zeros(0, np.float64)
        msg = self.store.types["sensor_msgs/msg/JointState"](
            header=self.Header(stamp=self._stamp(stamp), frame_id=""), name=list(names),
            position=np.asarray(positions, np.float64), velocity=empty, effort=empty)
        self._add(topic, log, msg)

    def close(self) -> Path:
        import shutil

        if self.path.exists():
            shutil.rmtree(self.path)
        writer = Rosbag2Writer(self.path)
        writer.open()
        conns = {t: writer.add_connection(t, typ, typestore=self.store)
                 for t, typ in self.TOPICS.items()}
        for log, topic, raw in sorted(self.pending, key=lambda x: x[0]):
            writer.write(conns[topic], log, raw)
        writer.close()
        return self.path
