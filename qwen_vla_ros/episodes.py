"""The simulated ALOHA stack run episode by episode (used by ``collect`` and ``eval``).

The ``aloha_sim`` bringup's nodes in this process (as ``qwen-vla-ros demo`` runs them), less
the ones a caller leaves out, with the sim waiting after each episode (``auto_reset``
false). ``start(i)`` begins episode i: HOLD, then (after the first; held, every time) the
sim's ``~/reset`` to seed ``seed_start + i``; the caller engages a mode (``engage``) and
``wait_result(seed)`` blocks until the sim reports the episode's end.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from qwen_vla_ros.runtime.modes import MODE_SERVICES
from qwen_vla_ros.runtime.supervision import AdapterStatus

SETTLE_STEPS = 5  # sim steps after a reset before a mode is engaged (0.1 s at 50 Hz)


def refuse_shared_domain(node, clocks: int = 1) -> None:
    """Raise where more than ``clocks`` publishers of /clock are on this ROS domain: another
    process's sim (a second collect, eval or demo) or a bag player is there, and every node of
    both stacks follows both clocks (the adapters log "clock jumped back", the episodes are
    spoiled). Checked as each episode starts, once discovery has had the stack's start-up."""
    found = node.count_publishers("/clock")
    if found > clocks:
        domain = os.environ.get("ROS_DOMAIN_ID", "0")
        raise RuntimeError(
            f"{found} publishers of /clock on ROS_DOMAIN_ID={domain}, this stack has "
            f"{clocks}: another sim, eval, demo or bag player runs on this domain; give "
            "each its own ROS_DOMAIN_ID")


def execution_params(blend: str | None) -> dict[str, dict[str, Any]]:
    """Node parameter overrides for one chunk execution mode (runtime/executor.BLEND_MODES),
    as ``eval --blend`` and the demo run it: ``rtc`` also has the policy sample each chunk
    continuing the prefix the adapter has committed to over the measured delay
    (``rtc_prefix_steps: -1``). None: the configs' own (config/aloha_adapter.yaml)."""
    extra: dict[str, dict[str, Any]] = {"policy_node": {"torch_threads": 1}}
    if blend is not None:
        extra["aloha_adapter"] = {"blend": blend}
    if blend == "rtc":
        extra["policy_node"]["rtc_prefix_steps"] = -1
    return extra


class EpisodeStack:
    """With ``hold`` (aloha_sim's ``hold_after_reset_steps``, paced evaluations) every episode,
    the first included, begins with a reset after which the sim takes ``hold`` steps and
    waits; policy_node is stopped before it and started again by ``engage`` once the adapter
    has engaged, so each episode's run starts from the same state, the same moment of the
    policy's schedule and the same chunk seeds, whatever the episodes before it did."""

    def __init__(self, nodes: dict[str, Any], probe, seed_start: int, hold: int = 0) -> None:
        from std_msgs.msg import Int32, String
        from std_srvs.srv import Trigger

        from qwen_vla_ros.demos.common import mode_switch
        from qwen_vla_ros.ros import qos

        self.nodes, self.probe, self.seed_start, self.hold = nodes, probe, seed_start, hold
        self.results: dict[int, dict[str, Any]] = {}
        self.rewards: list[tuple[float, int]] = []  # (sim time, reward) of the episode
        self._cond = threading.Condition()
        self.mode = mode_switch(probe)  # mode("hold"), mode("engage_teleop"), ...
        self._reset = probe.create_client(Trigger, "/aloha_sim/reset")
        probe.create_subscription(String, "/aloha_sim/episode_result", self._on_result,
                                  qos.COMMAND)
        probe.create_subscription(Int32, "/aloha_sim/reward", self._on_reward, qos.COMMAND)
        self.adapter_state = ""  # aloha_adapter's start-up phase (~/state)
        probe.create_subscription(String, "/aloha_adapter/state", self._on_adapter_state,
                                  qos.LATCHED)
        self.adapter_status: AdapterStatus | None = None  # its ~/effective_mode
        probe.create_subscription(String, "/aloha_adapter/effective_mode",
                                  self._on_adapter_status, qos.LATCHED)

    def _on_adapter_state(self, msg) -> None:
        with self._cond:
            self.adapter_state = msg.data
            self._cond.notify_all()

    def _on_adapter_status(self, msg) -> None:
        with self._cond:
            self.adapter_status = AdapterStatus.from_json(msg.data)
            self._cond.notify_all()

    def _on_result(self, msg) -> None:
        r = json.loads(msg.data)
        with self._cond:
            self.results[int(r["seed"])] = r
            self._cond.notify_all()

    def _on_reward(self, msg) -> None:
        t = self.probe.get_clock().now().nanoseconds * 1e-9
        with self._cond:
            self.rewards.append((t, int(msg.data)))
            self._cond.notify_all()

    def start(self, i: int, timeout: float = 10.0) -> int:
        """Begin episode ``i``; returns its seed. The first returns once aloha_adapter's
        start-up is done (a mode engaged before then waits, while a scripted leader has
        started). After a reset it returns once the sim has stepped ``SETTLE_STEPS`` times
        from the new state: the adapter measures the arms where they were before the reset
        until then, and a mode engaged earlier ramped from that stale pose (recorded episodes
        began with the followers commanded toward the previous episode's end pose)."""
        from qwen_vla_ros.demos.common import call_mode as _call

        refuse_shared_domain(self.probe)
        if i == 0 and "aloha_adapter" in self.nodes:
            with self._cond:
                if not self._cond.wait_for(lambda: self.adapter_state == "READY", timeout):
                    raise TimeoutError(f"aloha_adapter not READY within {timeout} s "
                                       f"(state {self.adapter_state!r})")
        if self.hold:
            self._held_start(i, timeout)
        elif i > 0:
            self.mode("hold")
            with self._cond:
                self.rewards.clear()
            _call(self._reset)
            with self._cond:
                if not self._cond.wait_for(lambda: len(self.rewards) >= SETTLE_STEPS + 1,
                                           timeout):
                    raise TimeoutError(f"episode {i}: the sim did not step after its reset "
                                       f"within {timeout} s")
        with self._cond:
            self.rewards.clear()
        return self.seed_start + i

    def _held_start(self, i: int, timeout: float) -> None:
        from qwen_vla_ros.demos.common import call_mode as _call

        self.mode("hold")
        policy = self.nodes.get("policy_node")
        if policy is not None and policy.active:
            policy.trigger_deactivate()  # engage() starts its run with the episode's
        sim = self.nodes["aloha_sim"]
        _call(self._reset)  # the service answers after the reset: ``held`` is clear by then
        if not sim.held.wait(timeout):
            raise TimeoutError(f"episode {i}: the sim did not reach its hold after the reset "
                               f"within {timeout} s")

    def engage(self, service: str, timeout: float = 10.0) -> None:
        """``mode(service)``; with ``hold``, once the adapter has engaged that mode, start
        policy_node's run: its first grant lets the held sim go on."""
        self.mode(service)
        if not self.hold:
            return
        want = MODE_SERVICES[service]
        with self._cond:
            if not self._cond.wait_for(lambda: self.adapter_status is not None
                                       and self.adapter_status.mode is want, timeout):
                raise TimeoutError(f"aloha_adapter not in {want.value} {timeout} s after "
                                   f"{service}: {self.adapter_status}")
        policy = self.nodes.get("policy_node")
        if policy is not None and not policy.active:
            policy.trigger_activate()

    def wait_result(self, seed: int, timeout: float) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: seed in self.results, timeout):
                raise TimeoutError(f"episode seed {seed}: no result after {timeout:g} s")
            return dict(self.results[seed])

    def reward_trace(self) -> list[tuple[float, int]]:
        with self._cond:
            return list(self.rewards)


@contextmanager
def bringup_nodes(bringup: str, values: dict[str, str], node_extra: dict[str, dict],
                  drop: tuple[str, ...] = ()) -> Iterator[tuple[dict[str, Any], Any]]:
    """A bringup's nodes (less ``drop``) and a harness node on sim time, spinning in this
    process; yields (nodes by name, harness node). On exit: HOLD is the caller's; nodes
    destroyed, rclpy shut down."""
    from qwen_vla_ros.paths import share_dir

    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE",
                          str(share_dir() / "config" / "fastdds_shm.xml"))
    import rclpy
    from rclpy.parameter import Parameter

    from qwen_vla_ros.bringup import create_node, load_bringup
    from qwen_vla_ros.nodes import init_without_signal_handlers, spinning

    entries = [e for e in load_bringup(bringup).resolve(values) if e.executable not in drop]
    init_without_signal_handlers()
    nodes: list = []
    try:
        for e in entries:
            nodes.append(create_node(e, node_extra.get(e.executable)))
        probe = rclpy.create_node("episodes", parameter_overrides=[
            Parameter("use_sim_time", value=True)])
        nodes.append(probe)
        with spinning(*nodes):
            yield {n.get_name(): n for n in nodes}, probe
    finally:
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


@contextmanager
def episode_stack(seed_start: int, task: str = "transfer_cube", rate_factor: float = 1.0,
                  drop: tuple[str, ...] = (), values: dict[str, str] | None = None,
                  extra: dict[str, dict] | None = None) -> Iterator[EpisodeStack]:
    """The sim stack spinning in this process; on exit: nodes destroyed, rclpy shut down."""
    node_extra = {"aloha_sim": {"task": task, "auto_reset": False}}
    for name, params in (extra or {}).items():
        node_extra[name] = {**node_extra.get(name, {}), **params}
    hold = int(node_extra["aloha_sim"].get("hold_after_reset_steps", 0))
    # held: episode 0 also begins with a reset, so the sim starts one seed before it
    first = seed_start - 1 if hold else seed_start
    with bringup_nodes("aloha_sim", {"seed": str(first), "rate_factor": str(rate_factor),
                                     **(values or {})}, node_extra, drop) as (nodes, probe):
        stack = EpisodeStack(nodes, probe, seed_start, hold)
        yield stack
        stack.mode("hold")
