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
    grace = [SHUTDOWN_GRACE_S]  # the node may need longer (e.g. a sleep move)

    def on_signal(*_) -> None:
        if not stop.is_set():
            stop.set()
            timer = threading.Timer(grace[0], _force_exit, args=(grace[0],))
            timer.daemon = True  # a clean exit does not wait for it
            timer.start()

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = node_cls()
    grace[0] = SHUTDOWN_GRACE_S + float(getattr(node, "shutdown_budget_s", 0.0))
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


SHUTDOWN_GRACE_S = 10.0  # after SIGINT/SIGTERM, beyond the node's own shutdown_budget_s


def _force_exit(grace: float) -> None:
    """The stop did not finish in time (a callback or the middleware's teardown blocked):
    say where each thread was, then leave with 0 as asked (ros2 launch would SIGKILL)."""
    import os
    import sys
    import traceback

    lines = [f"shutdown still running {grace:g} s after the signal; exiting. Threads were at:"]
    for tid, frame in sys._current_frames().items():
        lines.append(f"  thread {tid}:")
        lines += ["    " + ln.strip().replace("\n", " ")
                  for ln in traceback.format_stack(frame)[-3:]]
    print("\n".join(lines), file=sys.stderr, flush=True)
    os._exit(0)


@contextmanager
def spinning(*nodes) -> Iterator[object]:
    """Spin ``nodes`` in one SingleThreadedExecutor on a background thread, as one process
    would; on exit stop the spinning, join the thread, then shut the executor down. Yields the
    executor.

    The thread spins in short turns and checks a stop flag between them: shutting an executor
    down from another thread while it waits races in rclpy (its guard condition is destroyed
    under the waiting thread: "'NoneType' object has no attribute 'handle'")."""
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    ex = SingleThreadedExecutor()
    for n in nodes:
        ex.add_node(n)
    stop = threading.Event()

    def spin() -> None:
        try:
            while not stop.is_set() and ex.context.ok():
                ex.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:
            pass

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    try:
        yield ex
    finally:
        stop.set()
        th.join(5)
        ex.shutdown()
