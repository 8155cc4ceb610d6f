"""Fault drills: the simulated ALOHA stack as separate processes (each node started as ros2
launch starts it, from config/bringup/aloha_sim.yaml), one fault injected at a time, and what
the stack did about it.

For each drill: the time from injection to the adapter's fault report (wall and sim time),
what was reported (aloha_adapter ~/effective_mode, mode_manager's mode), whether the arms held
(no follower command outside the limits; after detection at most the one hold command per
stream, no motion), and whether any other process died. Used by test/nodes/test_fault_drills.py
and bench/faults.py (figures in docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.ros.conversions import sec_to_stamp, stamp_to_sec
from qwen_vla_ros.runtime.modes import MODE_SERVICES

# (name, mode it is injected in, process it targets)
DRILLS = (
    ("policy_node killed", "POLICY", "policy_node"),
    ("policy_node frozen (SIGSTOP)", "POLICY", "policy_node"),
    ("camera stopped", "POLICY", "aloha_sim"),
    ("leader arm stopped", "TELEOP", "scripted_leader"),
    ("joint states stopped", "TELEOP", "aloha_sim"),
    ("clock jumps back", "TELEOP", None),
    ("mode_manager killed", "TELEOP", "mode_manager"),
)
ARMS = ("follower_left", "follower_right")


@dataclass
class DrillResult:
    name: str
    mode: str
    detected: bool = False
    detect_wall_s: float | None = None
    detect_sim_s: float | None = None
    reported: str = ""  # the adapter's fault
    policy_reported: str = ""  # policy_node's /diagnostics message then (if it is up)
    mode_manager_after: str = ""  # its mode after detection ("" if it is the one killed)
    commands_after: int = 0  # follower commands (all streams) sent after the fault status,
    # in the second after it
    motion_after: float = 0.0  # largest change between those commands (rad / normalised)
    within_limits: bool = True
    outside: list[str] = field(default_factory=list)  # the commands that were not (stream,
    # seconds from injection, joint: value and the limit it broke)
    died: list[str] = field(default_factory=list)  # processes other than the target


def _with_sent_time(cb: Callable[[Any, int], None]) -> Callable:
    """A subscription callback that passes ``cb`` the message and its send time (ns): the
    DDS source timestamp where rclpy offers message info, else the receipt time."""
    from rclpy.subscription import Subscription

    if hasattr(Subscription, "CallbackType"):  # rclpy with message info (Iron and later)
        def with_info(msg, info) -> None:
            cb(msg, int(info["source_timestamp"]))
        return with_info
    return lambda msg: cb(msg, time.time_ns())


class _Probe:
    """What the drill watches, in this process (wall-clock node, its own thread)."""

    def __init__(self, spec) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        from qwen_vla_ros.ros import qos

        self.node = rclpy.create_node("drill_probe")
        self.spec = spec
        self.lock = threading.Lock()
        self.sim_t = 0.0
        # (wall, status, sent): wall = time.monotonic() at receipt; sent = the publisher's
        # source timestamp (ns) where rclpy hands it to callbacks (Iron and later), else the
        # receipt time. Commands and statuses travel on different topics, and one executor
        # takes them in its wait-set order, not arrival order: a command sent before the
        # fault status can reach its callback after it, so "after detection" compares `sent`.
        self.statuses: list[tuple[float, dict, int]] = []
        self.modes: list[str] = []
        self.chunks = 0
        self.policy_diag = ""
        self.commands: list[tuple[float, str, np.ndarray, int]] = []  # (wall, stream, v, sent)
        n = self.node
        n.create_subscription(Clock, "/clock", self._clock, 10)
        n.create_subscription(String, "/aloha_adapter/effective_mode",
                              _with_sent_time(self._status), qos.LATCHED)
        n.create_subscription(String, "/mode_manager/mode", lambda m: self.modes.append(m.data),
                              qos.LATCHED)
        n.create_subscription(JointTrajectory, "/policy_node/action_chunk", self._chunk,
                              qos.COMMAND)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 10)
        self.last_js_stamp = 0.0  # sim time of the newest follower joint state received
        for arm in ARMS:
            n.create_subscription(JointState, f"/{arm}/joint_states", self._js, qos.SENSOR)
            n.create_subscription(JointGroupCommand, f"/{arm}/commands/joint_group",
                                  _with_sent_time(self._command(f"{arm}/arm")), qos.COMMAND)
            n.create_subscription(JointSingleCommand, f"/{arm}/commands/joint_single",
                                  _with_sent_time(self._command(f"{arm}/gripper")),
                                  qos.COMMAND)
        self.clients = {k: n.create_client(Trigger, f"/mode_manager/{k}")
                        for k in MODE_SERVICES}
        self.clock_pub = n.create_publisher(Clock, "/clock", 10)

    def _js(self, msg) -> None:
        with self.lock:
            self.last_js_stamp = max(self.last_js_stamp, stamp_to_sec(msg.header.stamp))

    def _clock(self, msg) -> None:
        with self.lock:
            self.sim_t = max(self.sim_t, stamp_to_sec(msg.clock))

    def _status(self, msg, sent: int) -> None:
        with self.lock:
            self.statuses.append((time.monotonic(), json.loads(msg.data), sent))

    def _diag(self, msg) -> None:
        for st in msg.status:
            if st.name.endswith(": policy"):
                with self.lock:
                    self.policy_diag = st.message

    def _chunk(self, _msg) -> None:
        with self.lock:
            self.chunks += 1

    def _command(self, stream: str) -> Callable:
        def cb(msg, sent: int) -> None:
            with self.lock:
                self.commands.append((time.monotonic(), stream,
                                      np.atleast_1d(np.asarray(msg.cmd, float)), sent))
        return cb

    def status(self) -> dict:
        with self.lock:
            return self.statuses[-1][1] if self.statuses else {}


def _wait(cond: Callable[[], Any], timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False


class DrillStack:
    """The aloha_sim bringup's nodes, one process each, plus the probe."""

    def __init__(self, workdir: Path, checkpoint: Path, log=print) -> None:
        from qwen_vla_ros.bringup import load_bringup
        from qwen_vla_ros.embodiment.spec import load_embodiment
        from qwen_vla_ros.paths import share_dir

        self.workdir, self.log = workdir, log
        workdir.mkdir(parents=True, exist_ok=True)
        self.entries = {e.executable: e for e in load_bringup("aloha_sim").resolve(
            {"checkpoint": str(checkpoint)})}
        self.extra = {"aloha_sim": {"image_height": 240, "image_width": 320},
                      "policy_node": {"torch_threads": 1}}
        self.env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
        self.env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE",
                            str(share_dir() / "config" / "fastdds_shm.xml"))
        self.procs: dict[str, subprocess.Popen] = {}
        self.spec = load_embodiment("aloha")

    def start(self, exe: str) -> None:
        from qwen_vla_ros.bringup import process_command

        entry = self.entries[exe]
        cmd = process_command(entry, self.workdir / f"{exe}.params.yaml", self.extra.get(exe))
        with open(self.workdir / f"{exe}.log", "ab") as out:
            self.procs[exe] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                               env=self.env)

    def alive(self) -> dict[str, bool]:
        return {exe: p.poll() is None for exe, p in self.procs.items()}

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGINT)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def set_drop(self, probe: _Probe, topics: list[str]) -> None:
        """aloha_sim's run-time parameter ``drop_topics`` (a sensor gone quiet)."""
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        client = probe.node.create_client(SetParameters, "/aloha_sim/set_parameters")
        if not client.wait_for_service(timeout_sec=10):
            raise TimeoutError("/aloha_sim/set_parameters not available")
        value = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY,
                               string_array_value=topics or [""])
        fut = client.call_async(SetParameters.Request(
            parameters=[Parameter(name="drop_topics", value=value)]))
        if not _wait(fut.done, 10):
            raise TimeoutError("setting aloha_sim drop_topics: no answer")
        probe.node.destroy_client(client)


@contextmanager
def drill_stack(workdir: Path, checkpoint: Path, log=print) -> Iterator[tuple[DrillStack,
                                                                            _Probe]]:
    import rclpy

    from qwen_vla_ros.nodes import spinning

    stack = DrillStack(workdir, checkpoint, log)
    rclpy.init()
    probe = None
    try:
        for exe in stack.entries:
            stack.start(exe)
        probe = _Probe(stack.spec)
        with spinning(probe.node):
            if not _wait(lambda: probe.status() and probe.sim_t > 0, 120):
                raise TimeoutError("the stack did not come up: " + ", ".join(
                    f"{e}: {(workdir / f'{e}.log').read_text()[-300:]}" for e in stack.entries))
            yield stack, probe
    finally:
        stack.stop()
        if probe is not None:
            probe.node.destroy_node()
        rclpy.shutdown()


def _engage(stack: DrillStack, probe: _Probe, mode: str) -> None:
    from qwen_vla_ros.ros.services import call_trigger

    for exe in stack.entries:  # every process up, nothing dropped, from HOLD
        p = stack.procs.get(exe)
        if p is None or p.poll() is not None:
            stack.start(exe)
        else:
            p.send_signal(signal.SIGCONT)
    stack.set_drop(probe, [])
    call_trigger(probe.clients["hold"], timeout=10)
    if mode == "POLICY":  # a restarted policy_node publishes once its model is loaded
        start = probe.chunks
        if not _wait(lambda: probe.chunks >= start + 3, 90):
            raise TimeoutError("policy_node publishes no chunks")
    service = "engage_teleop" if mode == "TELEOP" else "engage_policy"
    if not _wait(lambda: call_trigger(probe.clients[service], timeout=10).success
                 and _wait(lambda: probe.status().get("mode") == mode, 10), 90, step=0.5):
        raise TimeoutError(f"could not engage {mode}: {probe.status()}")
    if mode == "POLICY":  # chunks flowing, the period measured
        start = probe.chunks
        if not _wait(lambda: probe.chunks >= start + 5, 30):
            raise TimeoutError("no chunks in POLICY")
    else:
        time.sleep(0.5)
    if probe.status().get("mode") != mode:
        raise TimeoutError(f"{mode} did not hold before the fault: {probe.status()}")


def _inject(name: str, stack: DrillStack, probe: _Probe
            ) -> tuple[Callable[[], None], Callable[[], None] | None]:
    """Do the fault; returns what undoes it (before the next drill) and, for a fault that one
    message carries, what sends it again at each poll until the fault shows (else None)."""
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    procs = stack.procs
    if name == "policy_node killed":
        procs["policy_node"].kill()
    elif name == "mode_manager killed":
        procs["mode_manager"].kill()
    elif name == "policy_node frozen (SIGSTOP)":
        procs["policy_node"].send_signal(signal.SIGSTOP)
        return lambda: procs["policy_node"].send_signal(signal.SIGCONT), None
    elif name == "leader arm stopped":
        procs["scripted_leader"].send_signal(signal.SIGSTOP)
        return lambda: procs["scripted_leader"].send_signal(signal.SIGCONT), None
    elif name == "camera stopped":
        stack.set_drop(probe, ["/cam_high/image_raw"])
    elif name == "joint states stopped":
        stack.set_drop(probe, [f"/{a}/joint_states" for a in ARMS])
    elif name == "clock jumps back":
        # One stale /clock can be replaced before the adapter takes it (the clock subscription
        # is best effort, depth 1, and the sim publishes every tick): the jumped-back reading
        # is sent again at each poll until the fault shows (a CI run missed the one).
        back = Clock(clock=sec_to_stamp(max(probe.sim_t - 5.0, 0.0), Time))
        probe.clock_pub.publish(back)
        return lambda: None, lambda: probe.clock_pub.publish(back)
    return lambda: None, None


def run_drill(name: str, mode: str, target: str | None, stack: DrillStack,
              probe: _Probe) -> DrillResult:
    res = DrillResult(name, mode)
    _engage(stack, probe, mode)
    lo, hi = stack.spec.lower(), stack.spec.upper()
    n_status = len(probe.statuses)
    t0, sim0 = time.monotonic(), probe.sim_t
    undo, again = _inject(name, stack, probe)

    def fault() -> tuple[float, dict, int] | None:
        with probe.lock:
            return next(((w, s, sent) for w, s, sent in probe.statuses[n_status:]
                         if s.get("fault")), None)

    def detect() -> tuple[float, dict, int] | None:
        found = fault()
        if found is None and again is not None:
            again()
        return found

    limit = 40.0 if name == "mode_manager killed" else 15.0  # a SIGKILLed node's DDS lease
    if _wait(detect, limit):
        wall, status, sent = fault()
        res.detected, res.reported = True, status["fault"]
        res.detect_wall_s = round(wall - t0, 3)
        if name == "joint states stopped":  # from the last state published, not from the
            # request to drop them (a parameter service call, slow on a loaded machine)
            with probe.lock:
                sim0 = probe.last_js_stamp
        res.detect_sim_s = round(status["stamp"] - sim0, 3) if name != "clock jumps back" \
            else None
        time.sleep(1.0)  # what the arms do in the second after detection
        res.policy_reported = probe.policy_diag if target != "policy_node" else ""
        with probe.lock:
            # sent after the fault status was (the hold command at the measured pose goes
            # out just before it)
            after = [(s, v) for _, s, v, t in probe.commands if t > sent]
        res.commands_after = len(after)
        by_stream: dict[str, list[np.ndarray]] = {}
        for s, v in after:
            by_stream.setdefault(s, []).append(v)
        res.motion_after = float(max((np.abs(np.diff(np.stack(v), axis=0)).max()
                                      for v in by_stream.values() if len(v) > 1), default=0.0))
        if target != "mode_manager":
            res.mode_manager_after = probe.modes[-1] if probe.modes else ""
    with probe.lock:
        cmds = [(w, s, v) for w, s, v, _ in probe.commands if w > t0 - 5.0]
    for w, s, v in cmds:
        arm, kind = s.split("/")
        idx = [i for i in stack.spec.dims_of(arm)
               if (stack.spec.action[i].gripper is None) == (kind == "arm")]
        if kind == "gripper":  # motor angle -> the limits' normalised opening
            g = stack.spec.action[idx[0]].gripper
            v = np.array([float(g.to_normalised(v[0]))])
        bad = (v < lo[idx] - 1e-5) | (v > hi[idx] + 1e-5)
        res.outside.extend(
            f"{s} at {w - t0:+.2f} s: {stack.spec.action[i].name} {x:.4f} outside "
            f"[{lo[i]:.4f}, {hi[i]:.4f}]"
            for i, x in zip(np.asarray(idx)[bad], v[bad], strict=True))
    res.within_limits = not res.outside
    res.died = [exe for exe, ok in stack.alive().items() if not ok and exe != target]
    undo()
    return res


def run_drills(workdir: Path, checkpoint: Path, names: list[str] | None = None,
               log=print) -> list[DrillResult]:
    out = []
    with drill_stack(workdir, checkpoint, log) as (stack, probe):
        for name, mode, target in DRILLS:
            if names and name not in names:
                continue
            res = run_drill(name, mode, target, stack, probe)
            log(f"{name:30s} detected {res.detected} in {res.detect_wall_s} s wall / "
                f"{res.detect_sim_s} s sim: {res.reported}")
            out.append(res)
    return out


def as_dicts(results: list[DrillResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
