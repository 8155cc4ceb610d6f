"""vln_goto episodes through the ROS path: ``collect --task vln_goto`` and
``eval --task vln_goto``.

The ``vln_sim`` bringup's nodes (base_sim with ``task: vln_goto``, navigation_node,
mode_manager) in this process, plus a harness node that judges each episode from what the
robot's own topics say: odometry (path, final pose), ``/base_sim/collisions``,
navigation_node's ``~/status`` (STOPPED = the base stopped on purpose). Per episode (seed
``seed_start + i``): HOLD, ``/base_sim/reset`` to that seed's start pose (after the first), the
instruction to navigation_node's ``~/instruction``, then

- collect: TELEOP, and the scripted navigator (``sim/vln_task.py``) drives ``teleop_cmd_vel``
  as a joystick would; after it arrives, ``REST_S`` more seconds at rest are recorded (they
  teach the stop flag);
- eval: POLICY until navigation_node says STOPPED, or the time limit.

Paced (``eval --task vln_goto --paced``) the sim waits for navigation_node (sim/lockstep.py,
runtime/pacing.py, as the arm's paced evaluation): every episode, the first included (begun
again by ``/base_sim/restart``), waits ``HOLD_STEPS`` after its reset for the policy's first
grant; the instruction is in before POLICY is engaged; a STOP keeps the sim at the stop.
Each episode then runs the same to the step, alone or after others, on an idle or a busy
machine.

Success, SPL and the distance at the stop use ``sim/vln_task.py``'s definitions.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.results import wilson_interval
from qwen_vla_ros.runtime.pacing import TIME_EPS
from qwen_vla_ros.sim.base import OBJECTS
from qwen_vla_ros.sim.vln_task import (
    SUCCESS_RADIUS,
    TIME_LIMIT,
    Detour,
    ScriptedNavigator,
    VlnEpisode,
    episode_at,
    episodes_in_run,
    failure_kinds,
    footprint_distance,
    language_figures,
    named_object,
    plan_path,
    sample_detour,
    spl,
    start_clearance,
    succeeded,
    success_by_start,
)

REST_S = 2.0  # s of sim time recorded at rest after the demonstrator arrives
# Paced: steps after a reset before the hold, two camera periods of base_sim's default rate
# (the second frame comes at the hold: the first plan sees the start pose's own).
HOLD_STEPS = 20
EPISODE_TOPIC = "/collect/episode"


class VlnEpisodeStack:
    def __init__(self, nodes: dict[str, Any], probe, seed_start: int,
                 colours: tuple[str, ...] = (), beside: bool = False,
                 paced: bool = False) -> None:
        from geometry_msgs.msg import Twist
        from nav_msgs.msg import Odometry
        from std_msgs.msg import Int32, String
        from std_srvs.srv import Trigger

        from qwen_vla_ros.demos.common import mode_switch
        from qwen_vla_ros.ros import qos

        self.nodes, self.probe, self.seed_start = nodes, probe, seed_start
        self.colours, self.beside, self.paced = colours, beside, paced
        self.t_start: float | None = None  # paced: the sim time the episode was held at
        self._twist = Twist
        self._cond = threading.Condition()
        self.track: list[tuple[float, float, float, float]] = []  # (t, x, y, yaw)
        self.announced: dict[int, dict[str, Any]] = {}  # by episode index
        self.collisions = 0
        self.status: list[tuple[float, str]] = []
        self.driver: ScriptedNavigator | None = None
        self.arrived_at: float | None = None
        self.detours: list[list[float]] = []  # [start, end] (clock s): the driver was pushed
        self.mode = mode_switch(probe)  # mode("hold"), mode("engage_teleop"), ...
        self._reset = probe.create_client(Trigger, "/base_sim/reset")
        self._restart = probe.create_client(Trigger, "/base_sim/restart")
        self.instruction_pub = probe.create_publisher(String, "/navigation_node/instruction",
                                                      qos.COMMAND)
        self.teleop_pub = probe.create_publisher(Twist, "/teleop_cmd_vel", qos.COMMAND)
        probe.create_subscription(Odometry, "/odom", self._on_odom, qos.SENSOR)
        probe.create_subscription(String, "/base_sim/episode", self._on_episode, qos.LATCHED)
        probe.create_subscription(Int32, "/base_sim/collisions", self._on_collisions,
                                  qos.COMMAND)
        probe.create_subscription(String, "/navigation_node/status", self._on_status,
                                  qos.LATCHED)

    # ---- topics -------------------------------------------------------------------------
    def _on_odom(self, msg) -> None:
        from qwen_vla_ros.ros.conversions import pose_2d, stamp_to_sec

        pose = pose_2d(msg.pose.pose.position, msg.pose.pose.orientation)
        t = stamp_to_sec(msg.header.stamp)
        with self._cond:
            dt = t - self.track[-1][0] if self.track else 0.0
            self.track.append((t, pose.x, pose.y, pose.yaw))
            driver = self.driver
            if driver is not None and self.arrived_at is None and dt > 0:
                pushed = driver.detouring
                v, w, done = driver.step(pose, dt)
                if driver.detouring and not pushed:
                    self.detours.append([t, math.inf])
                elif pushed and not driver.detouring:
                    self.detours[-1][1] = t
                if done:
                    v, w, self.arrived_at = 0.0, 0.0, t
            else:
                v, w = 0.0, 0.0
            self._cond.notify_all()
        if driver is not None:  # the joystick: published on every odometry message
            cmd = self._twist()
            cmd.linear.x, cmd.angular.z = float(v), float(w)
            self.teleop_pub.publish(cmd)

    def _on_episode(self, msg) -> None:
        info = json.loads(msg.data)
        with self._cond:
            self.announced[int(info.get("index", 0))] = info
            self._cond.notify_all()

    def _on_collisions(self, msg) -> None:
        with self._cond:
            self.collisions = int(msg.data)

    def _on_status(self, msg) -> None:
        with self._cond:
            now = self.track[-1][0] if self.track else 0.0
            self.status.append((now, msg.data))
            self._cond.notify_all()

    # ---- episodes -----------------------------------------------------------------------
    def now(self) -> float:
        with self._cond:
            return self.track[-1][0] if self.track else 0.0

    def _wait(self, predicate, timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"{what}: nothing after {timeout:g} s")

    def start(self, i: int, timeout: float = 30.0, instruction: str | None = None
              ) -> VlnEpisode:
        """Begin episode ``i``: HOLD, the sim at its start pose, navigation_node told the
        instruction (the episode's, or ``instruction``). Returns the episode."""
        from std_msgs.msg import String

        from qwen_vla_ros.demos.common import call_mode
        from qwen_vla_ros.episodes import refuse_shared_domain

        refuse_shared_domain(self.probe)
        self.mode("hold")
        with self._cond:
            self.driver, self.arrived_at = None, None
        if self.paced and i == 0:
            # Held, a step's odometry is not sent again: the harness hears base_sim and
            # navigation_node hears it before the first held start (restarted: episode 0 again).
            self._wait(lambda: bool(self.track) and 0 in self.announced
                       and self.instruction_pub.get_subscription_count() > 0, timeout,
                       "base_sim's odometry and navigation_node's instruction topic")
            call_mode(self._restart)  # answered after the restart: ``held`` is clear by then
        elif i > 0:
            call_mode(self._reset)
        self._wait(lambda: i in self.announced, timeout, f"/base_sim/episode {i}")
        start_time = float(self.announced[i]["start_time"])
        if self.paced:
            sim = self.nodes["base_sim"]
            if not sim.held.wait(timeout):
                raise TimeoutError(f"episode {i}: base_sim did not reach its hold within "
                                   f"{timeout:g} s")
            self.t_start = sim.gate.held_at
        self._wait(lambda: bool(self.track) and self.track[-1][0] > start_time
                   and (not self.paced or self.track[-1][0] >= self.t_start - TIME_EPS),
                   timeout, "odometry after the reset")
        episode = episode_at(self.seed_start, i, self.colours, self.beside)
        if self.announced[i]["instruction"] != episode.instruction:
            raise RuntimeError(f"base_sim runs {self.announced[i]}, not {episode}")
        if instruction is not None:
            episode = replace(episode, instruction=instruction)
        with self._cond:
            self.track = [p for p in self.track if p[0] > start_time]
            self.collisions, self.status = 0, []
        taken = self.nodes["navigation_node"].nav.instruction_taken
        taken.clear()
        self.instruction_pub.publish(String(data=episode.instruction))
        if self.paced and not taken.wait(timeout):  # in before POLICY: the run's first request
            raise TimeoutError(f"navigation_node did not take the instruction within "
                               f"{timeout:g} s")
        return episode

    def demonstrate(self, episode: VlnEpisode, timeout: float = 120.0,
                    search: bool = False, detour: Detour | None = None) -> dict[str, Any]:
        """TELEOP: the scripted navigator drives (``search``: it turns until it sees the
        named object first; ``detour``: it is pushed off its path once), then REST_S at
        rest; returns the result, with ``detours_s``: when it was pushed (clock s)."""
        t0 = self.now()
        with self._cond:
            self.detours = []
            self.driver = ScriptedNavigator(episode, search=search, detour=detour)
        self.mode("engage_teleop")
        self._wait(lambda: (self.arrived_at is not None
                            and self.track[-1][0] >= self.arrived_at + REST_S)
                   or self.track[-1][0] > t0 + TIME_LIMIT, timeout, "the demonstration")
        self.mode("hold")
        with self._cond:
            arrived, self.driver = self.arrived_at, None
            detours = [[a, b if math.isfinite(b) else self.track[-1][0]] for a, b in self.detours]
        return {**self.result(episode, t0, arrived), "detours_s": detours}

    def run_policy(self, episode: VlnEpisode, timeout: float = 300.0) -> dict[str, Any]:
        """POLICY until navigation_node says STOPPED or the time limit; returns the result."""
        t0 = self.t_start if self.paced else self.now()
        self.mode("engage_policy")

        def stopped() -> bool:
            return any(s.startswith("STOPPED") for _, s in self.status)

        self._wait(lambda: stopped() or self.track[-1][0] > t0 + TIME_LIMIT, timeout,
                   "the policy's episode")
        with self._cond:
            t_stop, reason = next(((t, s) for t, s in self.status if s.startswith("STOPPED")),
                                  (None, None))
        if self.paced and t_stop is not None:
            # navigation_node keeps the sim where it stopped: that step is the stop's
            t_stop = self.nodes["base_sim"].now_sim()
            self._wait(lambda: self.track[-1][0] >= t_stop - TIME_EPS, timeout,
                       "the odometry at the stop")
        self.mode("hold")
        result = self.result(episode, t0, t_stop)
        result["stop_reason"] = reason
        return result

    def result(self, episode: VlnEpisode, t0: float, t_stop: float | None) -> dict[str, Any]:
        """The episode judged from the track since ``t0``; ``t_stop``: when the base stopped
        on purpose (the demonstrator arrived, navigation_node said STOPPED), or None."""
        from qwen_vla_ros.runtime.navigation import Pose2D

        stopped = t_stop is not None
        with self._cond:
            track = np.array([p for p in self.track if p[0] >= t0 - TIME_EPS])
            collisions = self.collisions
        # the episode ends at the stop, or at the time limit (the track runs on a little)
        t_end = t_stop if stopped else min(float(track[-1, 0]), t0 + TIME_LIMIT)
        track = track[: max(int(np.searchsorted(track[:, 0], t_end + TIME_EPS)), 1)]
        end = track[-1]
        pose = Pose2D(float(end[1]), float(end[2]), float(end[3]))
        elapsed = float(t_end - track[0, 0])
        travelled = float(np.sum(np.hypot(*np.diff(track[:, 1:3], axis=0).T)))
        _, shortest = plan_path(episode.start, episode.target)
        near = min(OBJECTS, key=lambda o: footprint_distance(pose.x, pose.y, o))
        reached = near.name if stopped and footprint_distance(
            pose.x, pose.y, near) <= SUCCESS_RADIUS else None
        ok = succeeded(pose, episode.target, stopped, collisions > 0, elapsed)
        return {"seed": episode.seed, "instruction": episode.instruction,
                "target": episode.target.name, "success": bool(ok),
                "stopped": bool(stopped), "elapsed_s": round(elapsed, 2),
                "distance_to_target_m": round(footprint_distance(pose.x, pose.y,
                                                                 episode.target), 3),
                "reached": reached, "collisions": collisions, "path_m": round(travelled, 3),
                "shortest_m": round(float(shortest), 3),
                "spl": round(spl(ok, shortest, travelled), 3),
                "names_known_object": named_object(episode.instruction) is not None,
                "start": [episode.start.x, episode.start.y, episode.start.yaw],
                "start_clearance_m": round(start_clearance(episode.start.x, episode.start.y,
                                                           episode.target.name), 3),
                "end": [pose.x, pose.y, pose.yaw],
                "path": track[:, 1:3][:: max(1, len(track) // 200)].round(3).tolist()}


@contextmanager
def vln_episode_stack(seed_start: int, rate_factor: float = 1.0,
                      values: dict[str, str] | None = None,
                      extra: dict[str, dict] | None = None,
                      colours: tuple[str, ...] = (), beside: bool = False,
                      paced: bool = False) -> Iterator[VlnEpisodeStack]:
    from qwen_vla_ros.episodes import bringup_nodes

    node_extra = {"base_sim": {"task": "vln_goto", "seed": seed_start,
                               "colours": ",".join(colours), "beside": beside}}
    for name, params in (extra or {}).items():
        node_extra[name] = {**node_extra.get(name, {}), **params}
    # Without the obstacle stop: the eval judges the policy, and a stop would turn its
    # collisions into halts beside the object (collect's TELEOP never uses it).
    with bringup_nodes("vln_sim", {"rate_factor": str(rate_factor), "scan_topic": "",
                                   **(values or {})}, node_extra) as (nodes, probe):
        yield VlnEpisodeStack(nodes, probe, seed_start, colours, beside, paced)


def vln_topics():
    """What a VLN episode bag holds: the demo's topic set, the episode and the joystick."""
    from geometry_msgs.msg import Twist
    from std_msgs.msg import Int32, String

    from qwen_vla_ros.demos.vln import vln_topics as demo_topics
    from qwen_vla_ros.ros import qos

    return [*demo_topics(), ("/base_sim/episode", String, qos.LATCHED),
            ("/base_sim/collisions", Int32, qos.COMMAND),
            ("/teleop_cmd_vel", Twist, qos.COMMAND), (EPISODE_TOPIC, String, qos.LATCHED)]


def vln_bag_dir(out: Path, episode: VlnEpisode, by_colour: bool) -> Path:
    """An episode's bag: ``episode_SEED`` (``collect.episode_dir``), with the named object's
    colour after it when each start is recorded once per colour."""
    from qwen_vla_ros.collect import episode_dir

    bag = episode_dir(out, episode.seed)
    return bag.with_name(f"{bag.name}_{episode.target.colour}") if by_colour else bag


def collect_vln(out: Path, episodes: int, seed_start: int, rate_factor: float = 1.0,
                progress: bool = True, log=print, search: bool = False,
                detours: float = 0.0, colours: tuple[str, ...] = (), beside: bool = False
                ) -> dict[str, Any]:
    """Record ``episodes`` scripted vln_goto demonstrations, one bag each (``search``: the
    demonstrator that turns until it sees the named object first; ``detours``: the share of
    episodes, chosen by seed, where it is pushed off its path once: recovery data;
    ``colours``: ``episodes`` start poses, each once per colour, as the language check runs
    them -- pairs that differ only in the named object -- one bag per start and colour;
    ``beside``: those starts beside one of the colours' objects, once per other colour)."""
    from std_msgs.msg import String
    from tqdm import tqdm

    from qwen_vla_ros.collect import discard_unfinished, record_meta, summarize
    from qwen_vla_ros.ros import qos
    from qwen_vla_ros.ros.bag_recorder import BagRecorder

    plan = {s: sample_detour(s, detours) for s in range(seed_start, seed_start + episodes)}
    total = episodes_in_run(episodes, colours, beside)
    bags = [vln_bag_dir(out, episode_at(seed_start, k, colours, beside), bool(colours))
            for k in range(total)]
    out.mkdir(parents=True, exist_ok=True)
    for bag in bags:
        if bag.exists():
            shutil.rmtree(bag)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with vln_episode_stack(seed_start, rate_factor, colours=colours, beside=beside) as stack:
        meta_pub = stack.probe.create_publisher(String, EPISODE_TOPIC, qos.LATCHED)
        recorder = BagRecorder(stack.probe, bags[0], vln_topics())
        bar = tqdm(total=total, unit="ep", disable=not progress, desc="collect vln_goto")
        try:
            for i in range(total):
                if i > 0:  # the new bag first: the reset's episode message lands in it
                    stack.mode("hold")
                    recorder.restart(bags[i])
                episode = stack.start(i)
                r = stack.demonstrate(episode, search=search, detour=plan[episode.seed])
                meta = {"seed": episode.seed, "task": "vln_goto",
                        "instruction": episode.instruction, "target": episode.target.name,
                        "success": r["success"], "spl": r["spl"],
                        "demonstrator": "search, then plan" if search else "plan",
                        "detours_s": r["detours_s"],
                        "source": "qwen-vla-ros collect (scripted navigator, base_sim)"}
                record_meta(recorder, meta_pub, meta)
                rows.append({**meta, **{k: r[k] for k in ("elapsed_s", "path_m",
                                                           "collisions")}})
                bar.update(1)
                bar.set_postfix(success=f"{sum(m['success'] for m in rows)}/{i + 1}")
        except KeyboardInterrupt:
            bar.close()
            discard_unfinished(recorder, len(rows), log)
            raise
        finally:
            bar.close()
            recorder.close()
    return summarize(out, "vln_goto", rows, started, rate_factor, log)


def evaluate_vln(checkpoint: Path, out: Path, episodes: int, seed_start: int,
                 trained: list[int], rate_factor: float = 1.0,
                 params: dict[str, Any] | None = None, colours: tuple[str, ...] = (),
                 instruction: str | None = None, progress: bool = True,
                 log=print, paced: bool = False) -> dict[str, Any]:
    """Closed loop: navigation_node (POLICY) drives base_sim, one episode per seed; with
    ``colours``, each seed's start pose once per colour (``episodes`` start poses); with
    ``instruction``, that text instead of each episode's; ``paced``: the sim waits for the
    policy (module docstring)."""
    from tqdm import tqdm

    from qwen_vla_ros.evaluate import paced_sim_params
    from qwen_vla_ros.ros.params import require_parameters

    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    total = episodes_in_run(episodes, colours)
    extra: dict[str, dict[str, Any]] = {
        "navigation_node": {"torch_threads": 1, **(params or {})}}
    if paced:
        extra["navigation_node"]["pace_sim"] = True
        extra["base_sim"] = paced_sim_params(HOLD_STEPS)
    with vln_episode_stack(seed_start, rate_factor, {"checkpoint": str(checkpoint)},
                           extra, colours, paced=paced) as stack:
        node = stack.nodes["navigation_node"]
        require_parameters(node, params or {})
        if node.policy is None:
            raise ConfigError(f"navigation_node did not load {checkpoint}: "
                              f"{node.policy_error}")
        bar = tqdm(total=total, unit="ep", disable=not progress, desc="eval vln_goto")
        for i in range(total):
            episode = stack.start(i, instruction=instruction)
            rows.append(stack.run_policy(episode))
            bar.update(1)
            bar.set_postfix(success=f"{sum(r['success'] for r in rows)}/{i + 1}")
        bar.close()
        gate = stack.nodes["base_sim"].gate
        timeouts = {"pace_timeouts": gate.pace.timeouts if gate.pace is not None else None,
                    "lockstep_timeouts": gate.lockstep.timeouts if paced else None}
    known = [r for r in rows if r["names_known_object"]]
    wins = sum(r["success"] for r in known)
    result = {"checkpoint": str(checkpoint), "task": "vln_goto", "episodes": len(rows),
              "successes": wins, "success_rate": wins / max(len(known), 1),
              "success_ci95": wilson_interval(wins, len(known)),
              "spl": float(np.mean([r["spl"] for r in known])) if known else None,
              "distance_at_stop_m_median": float(np.median(
                  [r["distance_to_target_m"] for r in known])) if known else None,
              "episodes_with_collision": sum(r["collisions"] > 0 for r in rows),
              "episodes_naming_no_known_object": len(rows) - len(known),
              # ended by an object that is not the instructed one, wherever it stopped
              # (``failures`` counts a stop at the start apart, under stopped_at_start)
              "ended_by_another_object": sum(r["reached"] not in (None, r["target"])
                                             for r in known),
              "success_by_start": success_by_start(rows),
              "failures": failure_kinds(rows),
              "colours": list(colours),
              "seeds": [r["seed"] for r in rows], "trained_seeds": trained,
              "policy_params": dict(params or {}), "paced": paced, **timeouts,
              "rate_factor": rate_factor, "minutes": round((time.monotonic() - started) / 60,
                                                           2),
              "per_episode": rows}
    if colours:  # the language check: same start, each colour; chance is 1 in 4 objects
        result["language_check"] = {"start_poses": episodes, "colours": list(colours),
                                     **language_figures(rows)}
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    plot_paths(rows, out / "eval.png")
    log(f"eval vln_goto: {result['successes']}/{len(known)} successful, SPL "
        f"{result['spl']}, on seeds {seed_start}..{seed_start + episodes - 1} "
        f"({checkpoint}) -> {out}/eval.json")
    return result


def plot_paths(rows: list[dict[str, Any]], path: Path) -> None:
    """Top view: the room, its objects, each episode's path (green: success)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qwen_vla_ros.sim.base import OBJECTS, ROOM

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.add_patch(plt.Rectangle((-ROOM, -ROOM), 2 * ROOM, 2 * ROOM, fill=False, color="k"))
    for o in OBJECTS:
        ax.add_patch(plt.Circle((o.x, o.y), o.radius, color=o.colour, alpha=0.8))
    for r in rows:
        p = np.array(r["path"]).reshape(-1, 2)
        colour = "#16a34a" if r["success"] else "#dc2626"
        ax.plot(p[:, 0], p[:, 1], color=colour, lw=1, alpha=0.8)
        ax.plot(*r["start"][:2], "o", color=colour, ms=3)
        ax.annotate(r["target"].split("_")[0], r["end"][:2], fontsize=6)
    ax.set_aspect("equal")
    ax.set_xlim(-ROOM - 0.1, ROOM + 0.1)
    ax.set_ylim(-ROOM - 0.1, ROOM + 0.1)
    ok = sum(r["success"] for r in rows)
    ax.set_title(f"vln_goto: {ok}/{len(rows)} successful (green); label: instructed object")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
