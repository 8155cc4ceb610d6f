"""The rosbags typestore every bag reader and writer here uses: ROS 2 Jazzy's types, plus the
message definitions rosbags lacks (interbotix_xs_msgs, same field layout as the real package).
rosbags only: offline tools import this without a ROS install."""

from __future__ import annotations

EXTRA_MSGDEFS = {
    "interbotix_xs_msgs/msg/JointGroupCommand": "string name\nfloat32[] cmd\n",
    "interbotix_xs_msgs/msg/JointSingleCommand": "string name\nfloat32 cmd\n",
}


def typestore():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name, text in EXTRA_MSGDEFS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store
