"""One module per executable. Nodes wire topics, parameters and timers to the ROS-free core."""

from __future__ import annotations

import ctypes  # for _leave, imported before a signal handler may need it
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


def spin_node(node_cls, args=None) -> None:
    """Init rclpy, spin one node until SIGINT or SIGTERM, let it finish (``on_shutdown``),
    clean up; a stop by signal exits 0 with no traceback (ros2 launch sends SIGINT, then
    SIGTERM after its sigterm_timeout).

    A signal while the node is still being constructed (a model loading) abandons the
    construction and exits 0 at once, from the signal handler: nothing of the node's has run
    to finish, and an exception raised into the construction instead lands wherever the main
    thread is -- inside torch's import it aborted the process (SIGABRT; test_shutdown
    failed so in 3 of 50 runs beside two trainings, none in 69 since), and code that catches
    it would carry on.

    A stop cannot hang the process: see ``_Stop``. After a stop by signal the process leaves
    once its own cleanup is done, without the interpreter's finalisation (libraries' exit hooks
    and finalisers, e.g. MuJoCo's EGL display teardown, run there in an order no node controls,
    where no timer can run any more)."""
    import faulthandler
    import signal

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    faulthandler.enable()  # a fatal signal prints every thread's stack (stderr)
    stop = _Stop(SHUTDOWN_GRACE_S)
    starting = [True]

    def on_signal(*_) -> None:
        if starting[0]:  # abandon the construction (a model may take a minute to load)
            _leave(0)
        stop.begin()

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop.watch()
    node = node_cls()
    starting[0] = False
    stop.grace = SHUTDOWN_GRACE_S + float(getattr(node, "shutdown_budget_s", 0.0))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.event.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        finish = getattr(node, "on_shutdown", None)
        if finish is not None and rclpy.ok():
            finish(executor)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.unwatch()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    if stop.event.is_set():
        _leave(0)


SHUTDOWN_GRACE_S = 10.0  # after SIGINT/SIGTERM, beyond the node's own shutdown_budget_s
# Beyond the grace: the C-level stack dump and exit 1 (see _Stop). Not a short one: on a
# loaded machine single calls of the teardown take seconds, and rclpy makes the middleware's
# (a publisher's destroy) holding the interpreter lock (measured: base_sim 5-6 s from SIGINT
# to its exit beside four busy loops; beside twelve, caught in a publisher's destroy or a
# software-GL render 2 s after the signal); 5 s here once turned a slow teardown in CI into exit 1.
LAST_RESORT_S = 20.0


class _Stop:
    """The stop SIGINT/SIGTERM asks for, begun once, whichever way the signal is seen first.

    Python runs a signal handler only when the main thread is back in the interpreter; a main
    thread blocked in a C call (a middleware or GL wait) would never see it. The C-level
    handler also writes the signal number to a wake-up socket at once: a watcher thread reads
    it and begins the stop too. A begun stop arms (1) a timer that, after ``grace`` s, prints
    where the threads are and exits 0 (``_force_exit``; ros2 launch would SIGKILL), and (2)
    for a C call that blocks while holding the interpreter lock, where no Python thread can
    run, faulthandler's C watchdog: ``LAST_RESORT_S`` later it prints every thread's stack,
    and a second later ``_exit_0_later``'s C timer ends the process with 0 as (1) would --
    a hang reported, never a process left hanging (exit 1, faulthandler's own, where that
    timer cannot be made). Fast DDS's participant deletion, in rclpy's destroy_node of a
    process's last node, is such a call now and then (docs/reliability.md)."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.event = threading.Event()
        self._lock = threading.RLock()  # begin() may be re-entered by a signal in the main thread
        self._socks: tuple | None = None

    def begin(self, *_) -> None:
        import faulthandler

        with self._lock:
            if self.event.is_set():
                return
            self.event.set()
            timer = threading.Timer(self.grace, _force_exit, args=(self.grace,))
            timer.daemon = True  # a clean exit does not wait for it
            timer.start()
            last = self.grace + LAST_RESORT_S
            faulthandler.dump_traceback_later(last, exit=not _exit_0_later(last + 1.0))

    def watch(self) -> None:
        """Start the wake-up socket's watcher (main thread only, after the handlers are set)."""
        import signal
        import socket

        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        signal.set_wakeup_fd(theirs.fileno(), warn_on_full_buffer=False)
        self._socks = (ours, theirs)
        threading.Thread(target=self._read, args=(ours,), daemon=True,
                         name="signal-watcher").start()

    def _read(self, sock) -> None:
        import signal

        wanted = {int(signal.SIGINT), int(signal.SIGTERM)}
        while True:
            try:
                data = sock.recv(64)
            except OSError:
                return
            if not data:
                return
            if wanted & set(data):
                self.begin()

    def unwatch(self) -> None:
        import signal

        signal.set_wakeup_fd(-1)
        if self._socks is not None:
            for s in reversed(self._socks):  # the writing end first: the reader sees its end
                s.close()
            self._socks = None


def _leave(code: int) -> None:
    """Flush what was written (Python's and C's buffered streams), then exit at once."""
    import os
    import sys

    for stream in (sys.stdout, sys.stderr):  # RuntimeError: called amid a write (a handler)
        with suppress(OSError, ValueError, RuntimeError):
            stream.flush()
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)
    os._exit(code)


class _Sigevent(ctypes.Structure):
    """glibc's ``struct sigevent`` (64 bytes) for a SIGEV_THREAD notification."""
    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int), ("notify", ctypes.c_int),
                ("function", ctypes.c_void_p), ("attribute", ctypes.c_void_p),
                ("_pad", ctypes.c_int * 8)]


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("interval", _Timespec), ("value", _Timespec)]


_SIGEV_THREAD = 2  # Linux
_CLOCK_MONOTONIC = 1


def _exit_0_later(seconds: float) -> bool:
    """End the process with status 0 after ``seconds``, with nothing of Python's involved: a
    POSIX timer whose notification (SIGEV_THREAD) runs libc's ``_exit`` in a thread of its
    own with the timer's value, 0, as its argument -- so a C call that holds the
    interpreter lock forever cannot stop it, as it stops every Python-level timer. False
    where it cannot be armed (not glibc on Linux)."""
    if ctypes.sizeof(_Sigevent) != 64:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        event = _Sigevent(value=None, notify=_SIGEV_THREAD,
                          function=ctypes.cast(libc._exit, ctypes.c_void_p).value)
        timer = ctypes.c_void_p()
        if libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer)):
            return False
        whole = int(seconds)
        when = _Itimerspec(value=_Timespec(whole, int((seconds - whole) * 1e9)))
        return libc.timer_settime(timer, 0, ctypes.byref(when), None) == 0
    except (AttributeError, OSError):
        return False


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
    os._exit(0)  # no C-level flush here: a stuck thread may hold a stream's lock


def init_without_signal_handlers() -> None:
    """rclpy.init for a process that runs nodes in-process (collect, eval, the demos): without
    rclpy's SIGINT/SIGTERM handlers, which shut the context down under the spinning thread and
    leave the main thread waiting on topics that never come (Ctrl-C hung ``collect`` until
    its 300 s timeout). Python's own SIGINT handler raises KeyboardInterrupt in the main
    thread instead, whose ``with`` blocks stop the spinning, close the bag and destroy the
    nodes; the CLI turns SIGTERM into the same (``cli.main``)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)


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


def subscribe_pace(node, gate) -> None:
    """A simulator's paced policy grants (``runtime.pacing.PACE_TOPIC``, std_msgs/Float64:
    the sim s it may run to) into its ``sim.lockstep.SteppingGate``, when it is paced."""
    if gate.pace is None:
        return
    import time

    from std_msgs.msg import Float64

    from qwen_vla_ros.ros import qos
    from qwen_vla_ros.runtime.pacing import PACE_TOPIC

    node.create_subscription(Float64, PACE_TOPIC, lambda m: gate.pace.grant(
        float(m.data), time.monotonic()), qos.COMMAND)
