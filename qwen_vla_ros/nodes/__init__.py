"""One module per executable. Nodes wire topics, parameters and timers to the ROS-free core."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


def spin_node(node_cls, args=None) -> None:
    """Init rclpy, spin one node until Ctrl-C, clean up."""
    import rclpy

    rclpy.init(args=args)
    node = node_cls()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


@contextmanager
def spinning(*nodes) -> Iterator[object]:
    """Spin ``nodes`` in one SingleThreadedExecutor on a background thread, as one process
    would; on exit shut it down and join the thread. Yields the executor."""
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor()
    for n in nodes:
        ex.add_node(n)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        yield ex
    finally:
        ex.shutdown()
        th.join(5)
