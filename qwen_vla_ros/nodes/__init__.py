"""One module per executable. Nodes wire topics, parameters and timers to the ROS-free core."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


def spin_node(node_cls, args=None) -> None:
    """Init rclpy, spin one node until SIGINT or SIGTERM, let it finish (``on_shutdown``),
    clean up; a stop by signal exits 0 with no traceback (ros2 launch sends SIGINT, then
    SIGTERM after its sigterm_timeout)."""
    import signal

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    node = node_cls()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        finish = getattr(node, "on_shutdown", None)
        if finish is not None and rclpy.ok():
            finish(executor)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        executor.shutdown()
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
