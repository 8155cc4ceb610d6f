"""What both demos share: the checkpoint they run, the bringup spinning in this process with a
recorder, mode switches through mode_manager's services, waiting on sim time, and writing and
printing the summary."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qwen_vla_ros.paths import share_dir


def ensure_checkpoint(out: Path, checkpoint: Path | None, seed: int,
                      embodiment: str = "aloha") -> Path:
    """The checkpoint the demo runs: the given one, else the trained one shipped in
    checkpoints/ for the embodiment (ALOHA, VLN), else a random-init tiny one. A given or
    shipped one is loaded first, so a bad one is an error here, not a policy node that never
    publishes."""
    if checkpoint is None:
        from qwen_vla_ros.paths import SHIPPED_CHECKPOINTS, shipped_checkpoint

        if embodiment in SHIPPED_CHECKPOINTS:
            checkpoint = shipped_checkpoint(SHIPPED_CHECKPOINTS[embodiment])
    if checkpoint is not None:
        from qwen_vla_ros.errors import CheckpointError
        from qwen_vla_ros.model.checkpoint import load_policy

        policy = load_policy(checkpoint)
        if embodiment not in policy.embodiments:
            raise CheckpointError(f"{checkpoint}: no '{embodiment}' embodiment (has "
                                  f"{sorted(policy.embodiments)})")
        del policy
        return checkpoint
    path = out / "checkpoint"
    if not (path / "qwen_vla.json").exists():
        from qwen_vla_ros.model.presets import build_preset

        build_preset("tiny", [embodiment], seed=seed).save_pretrained(path)
    return path


def call_mode(client) -> None:
    from qwen_vla_ros.ros.services import call_trigger

    response = call_trigger(client)
    if not response.success:
        from qwen_vla_ros.errors import QwenVLAError

        raise QwenVLAError(f"service {client.srv_name} refused: {response.message}")


def mode_switch(node) -> Callable[[str], None]:
    """mode_manager's mode services on ``node``, as one call: ``switch("engage_policy")``
    (engage_teleop, engage_policy, hold); a refused switch raises with its reason."""
    from std_srvs.srv import Trigger

    from qwen_vla_ros.runtime.modes import MODE_SERVICES

    clients = {n: node.create_client(Trigger, f"/mode_manager/{n}") for n in MODE_SERVICES}
    return lambda service: call_mode(clients[service])


@contextmanager
def running_bringup(name: str, values: dict[str, str], bag: Path,
                    topics: Callable[[dict[str, Any]], list], node_extra: dict[str, dict]
                    ) -> Iterator[tuple[dict[str, Any], Callable[[str], None]]]:
    """A bringup's nodes in this process, spinning, with a probe recording ``topics(nodes)``
    to ``bag``. Yields (nodes by name, mode(service)): ``mode("engage_policy")`` calls
    /mode_manager/engage_policy. On exit: stop spinning, close the bag, destroy the nodes."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE",
                          str(share_dir() / "config" / "fastdds_shm.xml"))
    import rclpy
    from rclpy.parameter import Parameter

    from qwen_vla_ros.bringup import create_node, load_bringup
    from qwen_vla_ros.nodes import init_without_signal_handlers, spinning
    from qwen_vla_ros.ros.bag_recorder import BagRecorder

    if bag.exists():
        shutil.rmtree(bag)
    entries = load_bringup(name).resolve(values)
    init_without_signal_handlers()
    nodes: list = []
    try:
        for e in entries:
            nodes.append(create_node(e, node_extra.get(e.executable)))
        by_name = {n.get_name(): n for n in nodes}
        probe = rclpy.create_node("demo", parameter_overrides=[
            Parameter("use_sim_time", value=True)])
        nodes.append(probe)
        recorder = BagRecorder(probe, bag, topics(by_name))
        switch = mode_switch(probe)
        try:
            with spinning(*nodes):
                yield by_name, switch
                for name in ("policy_node", "navigation_node"):
                    problem = stop_policy(by_name[name], recorder) if name in by_name else None
                    if problem:
                        probe.get_logger().warning(problem)
                time.sleep(0.3)  # let the last messages reach the recorder
        finally:
            recorder.close()
    finally:
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def stop_policy(node, recorder, timeout: float = 10.0) -> str | None:
    """Stop ``node`` (policy_node: deactivated, lifecycle; navigation_node: once it has left
    POLICY, which plans only while it drives -- the demo ends in HOLD) and wait until
    ``recorder`` holds every chunk it published and each chunk's observation record. The two
    are published one after the other; a recording stopped between them leaves a chunk whose
    tick replay cannot find. Waits on the node's mode, on the inference worker (a chunk is
    published, or dropped, before it goes idle) and on the recorder's counts. Returns what is
    missing after ``timeout`` (e.g. a message published before the recorder was matched),
    else None."""
    host = node.host
    if host is None:
        return None
    deadline = time.monotonic() + timeout
    if hasattr(node, "trigger_deactivate"):
        if node.active:
            node.trigger_deactivate()
    else:
        while node.nav.wants_plan():  # the executor's thread sets the mode: no tick in between
            if time.monotonic() > deadline:
                return f"{node.get_name()} still planning {timeout:g} s after the switch"
            time.sleep(0.01)
    while not host.worker.idle():
        if time.monotonic() > deadline:
            return f"{node.get_name()} still inferring {timeout:g} s after it was stopped"
        time.sleep(0.01)
    n = host.published
    for pub in host.entities[:2]:  # the chunk and observation-record publishers
        left = max(0.0, deadline - time.monotonic())
        if pub.topic_name in recorder.topics and not recorder.wait_count(pub.topic_name, n,
                                                                          left):
            return (f"the bag holds {recorder.counts.get(pub.topic_name, 0)} of {n} "
                    f"messages published on {pub.topic_name}")
    return None


def wait_sim(sim, until: float) -> None:
    """Block until the simulator's clock reads ``until`` (s)."""
    while sim.now_sim() < until:
        time.sleep(0.05)


def write_summary(out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def aligned(rows: list[tuple[str, str]]) -> str:
    """Summary lines, values in one column."""
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{k:<{width}}{v}" for k, v in rows)
