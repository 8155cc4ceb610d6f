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

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import Channel, McapWriter, write_channel, write_string

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
