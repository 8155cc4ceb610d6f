"""aloha_sim: the simulated ALOHA behind the same ROS interface as the real followers.

  sub /<robot>/commands/joint_group   interbotix_xs_msgs/JointGroupCommand ("arm", 6 rad)
  sub /<robot>/commands/joint_single  interbotix_xs_msgs/JointSingleCommand ("gripper"; rad
                                      in current_based_position, metres between the fingers
                                      in linear_position, where grippers start as on the
                                      real bringup: parameter ``gripper_mode``)
  srv /<robot>/set_operating_modes, torque_enable, reboot_motors, set/get_motor_registers
                                      (interbotix_xs_msgs, as xs_sdk serves them)
  pub /<robot>/joint_states           sensor_msgs/JointState, xs_sdk names, 50 Hz (sim time)
  pub /<camera>/image_raw             sensor_msgs/Image rgb8 (rig names -> MJCF cameras)
  pub /clock                          rosgraph_msgs/Clock (the sim is the time source)
  pub ~/success (std_msgs/Bool, latched), ~/reward (std_msgs/Int32), ~/episode (std_msgs/String
      JSON: task, seed, start time; latched), ~/episode_result (JSON: seed, success, rewards)
  srv ~/reset (std_srvs/Trigger): next seed
  sub /sim_pace                       std_msgs/Float64, with pace_timeout_s > 0: how far a
                                      paced policy lets the sim run (sim s)

Fault drills: topics listed in the parameter ``drop_topics`` (settable at run time, e.g.
``ros2 param set /aloha_sim drop_topics "['/cam_high/image_raw']"``) are not published, as
if that camera or arm's driver had stopped; the sim and /clock run on.

Steps at 50 Hz of sim time, ``rate_factor`` x real time; with ``lockstep_timeout_s`` > 0, no
faster than the follower commands arrive (sim/lockstep.py); with ``pace_timeout_s`` > 0, no
further than a paced policy grants on /sim_pace (std_msgs/Float64), and with
``hold_after_reset_steps`` > 0 each episode begun by a reset, after that many steps, waits
for the policy's first grant of it (``held`` is set while it waits), and (``auto_reset``
false) stops at its end until the next reset. Rendering is the cost:
resolution, camera rate and quality are parameters (MUJOCO_GL=egl for headless).
"""

from __future__ import annotations

import json
import os
import time

from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Int32, String
from std_srvs.srv import Trigger

from qwen_vla_ros.embodiment.spec import load_embodiment
from qwen_vla_ros.nodes import subscribe_pace
from qwen_vla_ros.nodes.xs_services import serve_xs_services
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.conversions import rgb_to_image, sec_to_stamp
from qwen_vla_ros.ros.params import declare
from qwen_vla_ros.sim.aloha import DT, AlohaSim, AlohaSimParams
from qwen_vla_ros.sim.bridge import InterbotixSimBridge
from qwen_vla_ros.sim.lockstep import SteppingGate


class AlohaSimNode(Node):
    def __init__(self, **kwargs) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        from builtin_interfaces.msg import Time
        from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand

        super().__init__("aloha_sim", **kwargs)
        params = declare(self, AlohaSimParams, live=("drop_topics",))
        self.seed = params.seed
        rate = params.rate_factor
        hz = params.camera_rate_hz  # sim steps between camera images (0: off)
        self.camera_every = round(1.0 / (hz * DT)) if hz > 0 else 0
        h, w, fast, cams = params.image_height, params.image_width, params.fast_render, \
            params.cameras
        self.episode_steps = params.episode_steps
        self.auto_reset = params.auto_reset
        self.spec = load_embodiment(params.embodiment)
        gripper_mode, task = params.gripper_mode, params.task
        self.camera_map = dict(c.split("=", 1) for c in cams if c)
        self.sim = AlohaSim(task, image_size=(h, w), fast_render=fast,
                            disturbance=params.disturbance_rad)
        self.bridge = InterbotixSimBridge(self.spec, self.sim, gripper_mode)
        # Held (paced evaluations) the followers are driven by aloha_adapter, which sends
        # each one's arm (group) and gripper (single) command every tick: a step waits for
        # both from the first; otherwise the kinds a driver sends are learned as they come.
        self.gate = SteppingGate(params, self.bridge.robots,
                                 kinds=("group", "single") if params.hold_after_reset_steps
                                 else ())
        self.pace, self.lockstep, self.hold = self.gate.pace, self.gate.lockstep, self.gate.hold
        self.held = self.gate.held  # set while held at an episode's start
        subscribe_pace(self, self.gate)
        self._time_cls = Time
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.js_pubs = {r: self.create_publisher(JointState, f"/{r}/joint_states", qos.SENSOR)
                        for r in self.bridge.robots}
        for r in self.bridge.robots:
            self.create_subscription(
                JointGroupCommand, f"/{r}/commands/joint_group", self._command_cb(
                    r, "group", lambda m, r=r: self.bridge.on_group(r, m.name, list(m.cmd))),
                qos.COMMAND)
            self.create_subscription(
                JointSingleCommand, f"/{r}/commands/joint_single", self._command_cb(
                    r, "single", lambda m, r=r: self.bridge.on_single(r, m.name, float(m.cmd))),
                qos.COMMAND)
        for r in self.bridge.robots:
            serve_xs_services(self, r, self.bridge.motors[r])
        self.cam_pubs = {name: self.create_publisher(Image, f"/{name}/image_raw", qos.SENSOR)
                         for name in self.camera_map}
        self.success_pub = self.create_publisher(Bool, "~/success", qos.LATCHED)
        self.reward_pub = self.create_publisher(Int32, "~/reward", qos.COMMAND)
        self.episode_pub = self.create_publisher(String, "~/episode", qos.LATCHED)
        self.result_pub = self.create_publisher(String, "~/episode_result", qos.COMMAND)
        self.create_service(Trigger, "~/reset", self._reset_srv)
        self._time_offset = 0.0
        self._start_episode(self.seed)
        self.create_timer(DT / max(rate, 1e-3), self._step)

    # ---- episodes -----------------------------------------------------------------------
    def _start_episode(self, seed: int, reset: bool = False) -> None:
        self.seed = seed
        self._ended = False
        # MuJoCo restarts its clock at a reset; /clock must never go backwards.
        self._time_offset += self.sim.time
        self.bridge.reset(seed)
        self.gate.start_episode(reset)  # the first runs free: the drivers start up in it
        self.success_pub.publish(Bool(data=False))
        self.episode_pub.publish(String(data=json.dumps(
            {"task": self.sim.task, "seed": seed, "start": self.now_sim()})))
        self.get_logger().info(f"episode: {self.sim.task} seed {seed}")

    def now_sim(self) -> float:
        return self._time_offset + self.sim.time

    def _reset_srv(self, _req, response):
        self._start_episode(self.seed + 1, reset=True)
        response.success, response.message = True, f"seed {self.seed}"
        return response

    # ---- commands -----------------------------------------------------------------------
    def _command_cb(self, robot: str, kind: str, apply):
        """A command subscription: ``apply(msg)`` hands it to the bridge and returns a
        rejection reason (logged, throttled) or None."""
        def cb(msg) -> None:
            self.lockstep.commanded(robot, kind)
            reason = apply(msg)
            if reason:
                self.get_logger().warning(f"{robot}: {reason}", throttle_duration_sec=2.0)
        return cb

    # ---- stepping -----------------------------------------------------------------------
    def _step(self) -> None:
        if self.hold.finished:
            # Held at its end: no step more, and the result goes out once the commands for
            # the last step are in (whoever waits for it then has every tick of the episode).
            if not self._ended and self.lockstep.may_step(time.monotonic()):
                self._end_episode(self.hold.last)
            return
        if not self.gate.may_step(self.now_sim(), time.monotonic(), self.get_logger()):
            return
        info = self.bridge.step()
        t = self.now_sim()
        stamp = sec_to_stamp(t, self._time_cls)
        # Measurements stamped t go out before the clock reads t: a node that acts on the
        # clock then finds what was measured "at or before now" (as a dataset reads the bag).
        drop = set(self.get_parameter("drop_topics").value)
        for robot, pub in self.js_pubs.items():
            if pub.topic_name in drop:
                continue
            names, pos = self.bridge.joint_state(robot)
            msg = JointState(name=list(names), position=pos)
            msg.header.stamp = stamp
            pub.publish(msg)
        self.reward_pub.publish(Int32(data=info.reward))
        if self.camera_every and self.sim.steps % self.camera_every == 0:
            for name, mj_cam in self.camera_map.items():
                if self.cam_pubs[name].topic_name in drop:
                    continue
                self.cam_pubs[name].publish(rgb_to_image(self.sim.render(mj_cam), Image,
                                                         stamp=stamp, frame_id=name))
        self.clock_pub.publish(Clock(clock=stamp))
        self.gate.stepped(t, time.monotonic())
        if self.sim.steps >= self.episode_steps and not self._ended \
                and not self.hold.finish(info):
            self._end_episode(info)

    def _end_episode(self, info) -> None:
        self._ended = not self.auto_reset  # without auto reset: report once, wait
        self.success_pub.publish(Bool(data=info.success))
        self.result_pub.publish(String(data=json.dumps(
            {"task": self.sim.task, "seed": self.seed, "success": bool(info.success),
             "max_reward": int(self.sim.max_reward), "final_reward": int(info.reward)})))
        self.get_logger().info(f"episode seed {self.seed} ended: max reward "
                               f"{self.sim.max_reward}, success {info.success}")
        if self.auto_reset:
            self._start_episode(self.seed + 1)


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(AlohaSimNode, args)


if __name__ == "__main__":
    main()
