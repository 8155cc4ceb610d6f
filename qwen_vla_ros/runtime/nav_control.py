"""navigation_node's decisions, without ROS: its parameters, when to plan, what a predicted
chunk does to the plan, and what each control tick sends.

The node feeds inputs in (frames, depth stamps, odometry poses, the instruction, the mode,
teleop velocities), asks ``request`` whether and what to infer, hands the chunk back to
``on_chunk`` and calls ``control`` at the control rate; it publishes what they return.
Inputs come from the executor thread and chunks from the inference thread: every method
takes the controller's lock.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.model.types import ActionChunk
from qwen_vla_ros.params import at_least, one_of, param, positive, validate
from qwen_vla_ros.runtime.follower import FollowerConfig, PurePursuit
from qwen_vla_ros.runtime.modes import Mode
from qwen_vla_ros.runtime.navigation import (
    Navigator,
    NavState,
    Plan,
    Pose2D,
    PoseHistory,
    plan_from_chunk,
)
from qwen_vla_ros.runtime.observation import Rejection
from qwen_vla_ros.runtime.obstacle import FreeSpace, free_space
from qwen_vla_ros.runtime.pacing import TIME_EPS
from qwen_vla_ros.runtime.policy_loop import PolicyLoop, Request


@dataclass
class NavigationParams:
    """navigation_node's parameters (declared from this list by the node)."""

    checkpoint: str = param("", "policy checkpoint directory")
    embodiment: str = param("vln", "a waypoints embodiment")
    device: str = param("cpu", "torch device")
    dtype: str = param("float32", "float32 or bfloat16")
    instruction: str = param("", "instruction; also on ~/instruction")
    inference_rate_hz: float = param(1.0, "new plans per second", check=positive)
    max_observation_age: float = param(
        0.5, "s; older camera (or depth) -> no inference, zero velocity", check=positive)
    max_odom_age: float = param(0.3, "s; older odometry -> zero velocity", check=positive)
    flow_steps: int = param(10, "Euler steps per chunk", check=at_least(1))
    seed: int = param(0, "base seed; chunk i uses seed + i")
    torch_threads: int = param(0, "CPU threads for torch (0 = default)", check=at_least(0))
    history_frames: int = param(4, "past frames given to the model", check=at_least(0))
    history_period_s: float = param(1.0, "s between past frames", check=positive)
    pose_source: str = param("odom", "odom (nav_msgs/Odometry) or tf",
                             check=one_of("odom", "tf"))
    odom_frame: str = param("odom", "fixed frame of the plan (tf: parent)")
    base_frame: str = param("base_link", "robot frame (tf: child)")
    camera_topic: str = param("front/image_raw", "RGB camera topic")
    camera_compressed: bool = param(False, "camera is CompressedImage")
    depth_topic: str = param("", "depth image topic ('' = none)")
    scan_topic: str = param("", "sensor_msgs/LaserScan for the obstacle stop in POLICY ('' = "
                            "none); older than max_observation_age -> zero velocity")
    footprint_radius: float = param(0.2, "m; the base's round footprint, for the obstacle "
                                    "stop (base_sim's: 0.2)", check=positive)
    stop_clearance: float = param(0.1, "m kept between the footprint and any scan return "
                                  "ahead (or behind, reversing)", check=at_least(0.0))
    stop_threshold: float = param(0.5, "stop flag >= this: stop")
    stop_confirmations: int = param(  # 2: docs/benchmarks.md "Stop votes", "fine-tune C"
        2, "stop votes in a row that stop the base (a plan flagged stop at its first step, "
        "or the end of a path that ends in a stop); fewer: hold still, plan again",
        check=at_least(1))
    added_latency_ms: float = param(
        0.0, "drill/benchmark: extra latency (ms of the node's clock) after each inference; "
             "with pace_sim, each plan is applied exactly this long (sim time) after its "
             "request", check=at_least(0.0))
    pace_sim: bool = param(
        False, "benchmark: pace base_sim (pace_timeout_s > 0): it runs only as far as this "
               "node grants on /sim_pace; in POLICY, plans are requested on the sim's clock "
               "(every 1/inference_rate_hz at most, each once that moment's camera frame and "
               "odometry are in) and the model's own time does not count "
               "(runtime/pacing.py); the follower runs on the sim's clock too and cmd_vel "
               "goes out once per sim step (base_sim's lockstep waits for it). Never on a "
               "real robot")
    publish_goal: bool = param(True, "publish goal_pose in POLICY")
    follower: bool = param(True, "drive cmd_vel with the built-in pure-pursuit follower")
    control_rate_hz: float = param(20.0, "follower rate", check=positive)
    teleop_timeout: float = param(0.5, "s; older teleop_cmd_vel -> zero", check=positive)
    lookahead: float = param(0.4, "pure pursuit lookahead (m)", check=positive)
    max_linear: float = param(0.4, "m/s", check=positive)
    max_angular: float = param(1.2, "rad/s", check=positive)
    max_linear_accel: float = param(0.8, "m/s^2", check=positive)
    max_angular_accel: float = param(3.0, "rad/s^2", check=positive)
    goal_tolerance: float = param(0.12, "m", check=positive)
    yaw_tolerance: float = param(0.25, "rad; at a plan's last waypoint, turn to its yaw until "
                                 "within this (>= pi: ignore the yaw)", check=positive)

    def __post_init__(self) -> None:
        validate(self)

    def follower_config(self) -> FollowerConfig:
        return FollowerConfig(
            lookahead=self.lookahead, max_linear=self.max_linear, max_angular=self.max_angular,
            max_linear_accel=self.max_linear_accel, max_angular_accel=self.max_angular_accel,
            goal_tolerance=self.goal_tolerance, yaw_tolerance=self.yaw_tolerance)


@dataclass
class Velocity:
    """What a control tick sends on cmd_vel (None: nothing, Nav2 drives)."""

    v: float
    w: float


@dataclass
class Outcome:
    """What the node should publish after a control tick or a chunk."""

    velocity: Velocity | None = None
    status: str | None = None  # the new status text, when it is set
    goal_here: Pose2D | None = None  # end a Nav2 goal: send the robot's own pose as the goal
    plan: Plan | None = None  # a plan taken: publish its waypoints (and goal)
    robot: Pose2D | None = None  # the robot's latest pose when the plan was taken
    warning: str | None = None  # a throttled warning (key:text)
    error: str | None = None  # the chunk was refused


class NavigationController:
    def __init__(self, spec: EmbodimentSpec, params: NavigationParams) -> None:
        if spec.kind != "waypoints":
            raise ValueError(f"embodiment '{spec.name}' is {spec.kind}, not waypoints")
        self.spec = spec
        self.params = params
        self.loop = PolicyLoop(spec, params.max_observation_age, seed=params.seed,
                               history_frames=params.history_frames,
                               history_period=params.history_period_s)
        self.poses = PoseHistory(window=10.0)
        self.navigator = Navigator(params.stop_confirmations)
        self.follower = PurePursuit(params.follower_config())
        self.mode = Mode.HOLD
        self.control_dt = 1.0 / params.control_rate_hz
        self._teleop: tuple[float, float, float] | None = None  # (time, v, w)
        self._depth_stamp: float | None = None if params.depth_topic else math.inf
        # What the last scan leaves free; without a scan topic nothing limits the speed.
        self._free: FreeSpace | None = None if params.scan_topic else \
            FreeSpace(math.inf, math.inf, math.inf)
        self._lock = threading.Lock()
        self.instruction_taken = threading.Event()  # set at each (a harness waits on it)

    # ---- inputs -------------------------------------------------------------------------
    def add_image(self, rgb, stamp: float) -> None:
        with self._lock:
            self.loop.add_image(self.spec.cameras[0], rgb, stamp)

    def add_depth(self, stamp: float) -> None:
        self._depth_stamp = stamp

    def add_scan(self, stamp: float, angles, ranges, range_min: float = 0.0) -> str | None:
        """A range scan (base frame); returns why it was refused, or None."""
        try:
            free = free_space(angles, ranges, self.params.footprint_radius,
                              self.params.stop_clearance, stamp, range_min)
        except ValueError as exc:
            return f"scan refused: {exc}"
        with self._lock:
            self._free = free
        return None

    def add_pose(self, stamp: float, pose: Pose2D) -> str | None:
        """Returns why the pose was rejected, or None."""
        with self._lock:
            return self.poses.add(stamp, pose)

    def set_instruction(self, text: str) -> str | None:
        """A new task; returns why the text was ignored (empty), or None."""
        with self._lock:
            reason = self.loop.set_instruction(text)
            if reason:
                return reason
            self.navigator.new_instruction()
            self.instruction_taken.set()
            self.follower.clear()
            if self.loop.history is not None:  # a new task: look back only at its frames,
                self.loop.history.clear()  # as the demonstrations it learned from did
        return None

    def set_mode(self, mode: Mode | str) -> bool:
        """Returns whether the mode changed; ValueError for a name that is no mode."""
        mode = Mode.parse(mode) if isinstance(mode, str) else mode
        with self._lock:
            if mode is self.mode:
                return False
            self.mode = mode
            self.follower.reset_velocity()
            return True

    def set_teleop(self, now: float, v: float, w: float) -> str | None:
        if not (math.isfinite(v) and math.isfinite(w)):
            return "teleop_cmd_vel with NaN/inf ignored"
        self._teleop = (now, v, w)
        return None

    # ---- freshness ----------------------------------------------------------------------
    def diagnostic_values(self, now: float) -> dict[str, Any]:
        latest = self.poses.latest()
        return {"mode": self.mode.value, "state": self.navigator.state.value,
                "odom_age_ms": None if latest is None else (now - latest[0]) * 1e3}

    def stale(self, now: float) -> str | None:
        """Why the inputs are too old to plan or drive on, or None."""
        latest = self.poses.latest()
        if latest is None:
            return "no odometry yet"
        if now - latest[0] > self.params.max_odom_age:
            return f"odometry is {(now - latest[0]) * 1e3:.0f} ms old"
        cam = self.loop.images.stamps().get(self.spec.cameras[0])
        if cam is None:
            return "no camera image yet"
        if now - cam > self.params.max_observation_age:
            return f"camera is {(now - cam) * 1e3:.0f} ms old"
        if self._depth_stamp is None or now - self._depth_stamp > self.params.max_observation_age:
            return "depth is missing or stale"
        free = self._free
        if free is None or now - free.stamp > self.params.max_observation_age:
            return "scan is missing or stale"
        return None

    def awaiting(self, now: float) -> list[str]:
        """Inputs a paced sim published for clock ``now`` that have not arrived yet (its clock
        may come first): the camera frame due by ``now`` and the odometry stamped ``now``
        (each while the last one is fresh; stale inputs are not waited for)."""
        with self._lock:
            late = self.loop.awaiting(now)
            latest = self.poses.latest()
        if latest is not None and latest[0] < now - TIME_EPS \
                and now - latest[0] <= self.params.max_odom_age:
            late.append("odom")
        return late

    def restart_run(self, now: float) -> None:
        """A paced POLICY run begins at clock ``now``: chunk seeds from ``seed`` again, the
        history begun from the latest frame, answers to earlier requests dropped
        (``PolicyLoop.restart``), so a run repeats whatever ran before it."""
        with self._lock:
            self.loop.restart(now)

    # ---- planning -----------------------------------------------------------------------
    def wants_plan(self) -> bool:
        """The model plans only while it drives (POLICY) and has somewhere to go."""
        return self.mode is Mode.POLICY and self.navigator.state is NavState.NAVIGATING

    def request(self, now: float) -> Request | str:
        """The observation to infer from now, or why not (caller checks ``wants_plan``)."""
        stale = self.stale(now)
        if stale:
            return f"not inferring: {stale}"
        with self._lock:
            request = self.loop.request(now)
        return str(request) if isinstance(request, Rejection) else request

    def on_chunk(self, request: Request, chunk: ActionChunk) -> Outcome:
        """A predicted chunk: placed in the odom frame at the observation time and offered
        to the navigator. ``error`` set: refused (not published); ``warning`` set with no
        plan: published but not driven on."""
        with self._lock:
            reason = self.loop.accept(request, chunk)
            if reason:
                return Outcome(error=reason)
            pose = self.poses.at(chunk.stamp)
        if isinstance(pose, Rejection):
            return Outcome(warning=f"plan:plan dropped: {pose}")
        plan = plan_from_chunk(chunk.actions, self.spec.action_names, pose, chunk.stamp,
                               self.params.stop_threshold, self.spec.lower(), self.spec.upper())
        warning = (f"clip:{plan.clipped} predicted values outside the embodiment's limits "
                   "were clipped to them") if plan.clipped else None
        with self._lock:
            before = self.navigator.state
            taken = self.navigator.offer(plan)
            current = self.poses.latest()
            if taken and self.navigator.plan is not None and current is not None:
                self.follower.set_path(plan.waypoints, current[1])
            elif self.navigator.plan is None:  # stopped, or holding while a stop is proposed
                self.follower.clear()
        if not taken:
            return Outcome(warning=warning)
        out = self._after_navigator(before)
        out.plan, out.robot, out.warning = plan, current[1] if current else None, warning
        return out

    def _after_navigator(self, before: NavState) -> Outcome:
        """A STOP is reported; on entering it with Nav2 driving, the goal becomes the robot's
        own pose, which Nav2 reaches at once."""
        if self.navigator.state is not NavState.STOPPED:
            return Outcome()
        latest = self.poses.latest()
        goal_here = None
        if (before is not NavState.STOPPED and not self.params.follower
                and self.params.publish_goal and self.mode is Mode.POLICY
                and latest is not None):
            goal_here = latest[1]
        return Outcome(status=f"STOPPED: {self.navigator.reason}", goal_here=goal_here)

    # ---- control ------------------------------------------------------------------------
    def _velocity(self, v: float, w: float) -> Velocity | None:
        if not self.params.follower and self.mode is Mode.POLICY:
            return None  # Nav2 drives; HOLD / TELEOP still own cmd_vel
        return Velocity(float(v), float(w))

    def stop_velocity(self) -> Velocity | None:
        """What a failed tick sends: zero (unless Nav2 drives)."""
        return self._velocity(0.0, 0.0)

    def control(self, now: float) -> Outcome:
        if self.mode is Mode.HOLD:
            return Outcome(velocity=self._velocity(0.0, 0.0))
        if self.mode is Mode.TELEOP:
            t = self._teleop
            if t is not None and now - t[0] <= self.params.teleop_timeout:
                return Outcome(velocity=self._velocity(t[1], t[2]))
            return Outcome(velocity=self._velocity(0.0, 0.0))
        stale = self.stale(now)  # POLICY from here on
        if stale:
            self.follower.reset_velocity()
            return Outcome(velocity=self._velocity(0.0, 0.0), status=f"STALE: {stale}")
        with self._lock:
            state = self.navigator.state
            latest = self.poses.latest()
            blocked = ""
            if state is not NavState.NAVIGATING or self.follower.path is None:
                v, w = 0.0, 0.0
            else:
                v_before = self.follower.v
                v, w, done = self.follower.step(latest[1], self.control_dt)
                if done:
                    self.navigator.reached_end()
                    if self.navigator.plan is None:
                        self.follower.clear()
                # Braking planned at half the follower's limit: the cut from one tick to the
                # next (a scan's period, the distance driven since) stays within the limit.
                since_scan = abs(v_before) * max(now - self._free.stamp, 0.0)
                limit = self._free.speed_limit(v, self.params.max_linear_accel / 2, since_scan)
                if abs(v) > limit:  # the obstacle stop: slow to what still brakes in time
                    if limit < 1e-3:
                        blocked = "ahead" if v > 0 else "behind"
                    v = math.copysign(limit, v)
                    self.follower.reset_velocity(v, w)  # its ramps go on from what is sent
        out = self._after_navigator(state)
        out.velocity = self._velocity(v, w)
        if out.status is None and self.navigator.state is NavState.NAVIGATING:
            out.status = f"BLOCKED: obstacle {blocked} (turning only)" if blocked \
                else f"NAVIGATING: {self.navigator.reason}" if self.navigator.proposing_stop \
                else "NAVIGATING"
        if blocked:
            out.warning = (f"obstacle:obstacle {blocked} within the stop clearance "
                           f"({self.params.stop_clearance:g} m): linear speed held at zero")
        return out
