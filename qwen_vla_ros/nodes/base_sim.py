"""base_sim: the simulated VLN mobile base (MuJoCo room, unicycle, forward camera).

Topics:
  pub  /clock               rosgraph_msgs/Clock (sim time; the other nodes use_sim_time)
  pub  odom                 nav_msgs/Odometry, frame ``odom``, child ``base_link``, 50 Hz
  pub  front/image_raw      sensor_msgs/Image rgb8 (``camera_rate_hz``)
  pub  scan                 sensor_msgs/LaserScan from the base centre (frame ``base_link``,
                            360 rays, ``scan_rate_hz``): MuJoCo ray casts to walls, objects
  pub  /tf                  tf2_msgs/TFMessage odom -> base_link (where tf2_msgs is installed)
  pub  ~/bumped             std_msgs/Bool, true while a move is refused by a wall or object
  sub  cmd_vel              geometry_msgs/Twist (linear.x, angular.z); older than
                            ``cmd_timeout`` s -> the base stops, as a real base driver does
  pub  ~/episode            std_msgs/String, latched, task vln_goto: JSON with task, index
                            (episodes since the start), seed,
                            instruction, target (object name), start [x, y, yaw], start
                            time; the instruction is for navigation_node's ~/instruction
  pub  ~/collisions         std_msgs/Int32: moves refused in this episode (vln_goto)
  srv  ~/reset              std_srvs/Trigger: back to the start pose; vln_goto: the next
                            episode (the next seed, or the next colour with ``colours``)
  srv  ~/restart            std_srvs/Trigger: the same episode again from its start pose
  sub  /sim_pace            std_msgs/Float64, with pace_timeout_s > 0: how far a paced
                            navigation_node lets the sim run (sim s)
RViz: fixed frame ``odom``.

Steps at 50 Hz of sim time, ``rate_factor`` x real time. Paced (``eval --task vln_goto
--paced``; sim/lockstep.py, as aloha_sim): with ``pace_timeout_s`` > 0 no further than
navigation_node (``pace_sim``) grants; with ``lockstep_timeout_s`` > 0 each step waits for
the cmd_vel of the step before (a paced navigation_node sends one per step); with
``hold_after_reset_steps`` > 0 every episode begun by a reset or restart waits after that
many steps for the policy's first grant (``held``; ``gate.held_at``: the sim time it waits at);
the first, which nothing began, runs free.
"""

from __future__ import annotations

import json
import math
import os
import time

from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, LaserScan
from std_msgs.msg import Bool, Int32, String
from std_srvs.srv import Trigger

from qwen_vla_ros.nodes import subscribe_pace
from qwen_vla_ros.ros import qos
from qwen_vla_ros.ros.conversions import arrays_to_scan, rgb_to_image, sec_to_stamp
from qwen_vla_ros.ros.params import declare
from qwen_vla_ros.runtime.navigation import Pose2D, quaternion_from_yaw
from qwen_vla_ros.sim.base import SCAN_RANGE, BaseSimParams
from qwen_vla_ros.sim.lockstep import SteppingGate
from qwen_vla_ros.sim.vln_task import episode_at, parse_colours

DT = 0.02


class BaseSimNode(Node):
    def __init__(self, **kwargs) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        from builtin_interfaces.msg import Time

        from qwen_vla_ros.sim.base import BaseSim

        super().__init__("base_sim", **kwargs)
        params = declare(self, BaseSimParams)
        rate = params.rate_factor
        # sim steps between camera images and between scans (0: off)
        self.camera_every, self.scan_every = (
            round(1.0 / (hz * DT)) if hz > 0 else 0
            for hz in (params.camera_rate_hz, params.scan_rate_hz))
        h, w = params.image_height, params.image_width
        self.cmd_timeout = params.cmd_timeout
        self.start = Pose2D(params.start_x, params.start_y, params.start_yaw)
        self.task, self.seed = params.task, params.seed
        self.colours, self.k = parse_colours(params.colours), 0  # k: episodes since start
        self.beside = params.beside
        self.episode = episode_at(self.seed, 0, self.colours, self.beside) \
            if self.task == "vln_goto" else None
        if self.episode is not None:
            self.start = self.episode.start
        self.sim = BaseSim(image_size=(h, w), start=self.start)
        self.collisions = 0
        self._time_cls = Time
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.odom_pub = self.create_publisher(Odometry, "odom", qos.SENSOR)
        self.cam_pub = self.create_publisher(Image, "front/image_raw", qos.SENSOR)
        self.scan_pub = self.create_publisher(LaserScan, "scan", qos.SENSOR)
        self.bump_pub = self.create_publisher(Bool, "~/bumped", qos.COMMAND)
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:  # pip-only installs without the fixture: odometry only
            self.get_logger().info("tf2_msgs not installed: /tf is not published")
            self.tf_pub, self._tf_cls = None, None
        else:
            self.tf_pub = self.create_publisher(TFMessage, "/tf", 100)
            self._tf_cls = TFMessage
        self.episode_pub = self.create_publisher(String, "~/episode", qos.LATCHED)
        self.collision_pub = self.create_publisher(Int32, "~/collisions", qos.COMMAND)
        self.create_subscription(Twist, "cmd_vel", self._cmd_cb, qos.COMMAND)
        self.create_service(Trigger, "~/reset", lambda _req, res: self._begin(res, next_=True))
        self.create_service(Trigger, "~/restart",
                            lambda _req, res: self._begin(res, next_=False))
        self._cmd = (0.0, 0.0)
        self._cmd_time = -math.inf
        self.steps = 0
        self.gate = SteppingGate(params, ("base",), kinds=("cmd_vel",))
        self.held = self.gate.held
        subscribe_pace(self, self.gate)
        self.gate.start_episode(reset=False)  # the first runs free (the harness restarts it)
        self._announce()
        self.create_timer(DT / max(rate, 1e-3), self._step)

    def now_sim(self) -> float:
        return self.sim.time

    def _cmd_cb(self, msg: Twist) -> None:
        self.gate.lockstep.commanded("base", "cmd_vel")
        v, w = float(msg.linear.x), float(msg.angular.z)
        if not (math.isfinite(v) and math.isfinite(w)):
            self.get_logger().warning("cmd_vel with NaN/inf ignored: stopping",
                                      throttle_duration_sec=2.0)
            v, w = 0.0, 0.0
        self._cmd = (v, w)
        self._cmd_time = self.sim.time

    def _begin(self, response, next_: bool):
        """``~/reset`` (``next_``: vln_goto's next episode) or ``~/restart`` (this one again)."""
        if self.episode is not None and next_:
            self.k += 1
            self.episode = episode_at(self.seed, self.k, self.colours, self.beside)
            self.start = self.episode.start
        self.sim.reset(self.start)
        self._cmd, self._cmd_time = (0.0, 0.0), -math.inf
        self.collisions = 0
        self.steps = 0  # images and scans at the same steps of every episode
        self.gate.start_episode(reset=True)
        self._announce()
        response.success = True
        response.message = (f"vln_goto seed {self.episode.seed}: {self.episode.instruction}"
                            if self.episode else "base back at the start pose")
        return response

    def _announce(self) -> None:
        """The episode (latched), for navigation's instruction and the harness's judge."""
        ep = self.episode
        if ep is None:
            return
        self.episode_pub.publish(String(data=json.dumps({
            "task": self.task, "index": self.k, "seed": ep.seed, "instruction": ep.instruction,
            "target": ep.target.name, "start": [ep.start.x, ep.start.y, ep.start.yaw],
            "start_time": self.sim.time})))
        self.get_logger().info(f"episode: vln_goto seed {ep.seed}: {ep.instruction!r}")

    def _step(self) -> None:
        if not self.gate.may_step(self.sim.time, time.monotonic(), self.get_logger()):
            return
        v, w = self._cmd if self.sim.time - self._cmd_time <= self.cmd_timeout else (0.0, 0.0)
        pose = self.sim.step(v, w, DT)
        self.steps += 1
        stamp = sec_to_stamp(self.sim.time, self._time_cls)
        odom = Odometry()
        odom.header.stamp = stamp
        odom.header.frame_id = "odom"
        odom.child_frame_id = "base_link"
        odom.pose.pose.position.x, odom.pose.pose.position.y = pose.x, pose.y
        q = quaternion_from_yaw(pose.yaw)
        o = odom.pose.pose.orientation
        o.x, o.y, o.z, o.w = q
        odom.twist.twist.linear.x, odom.twist.twist.angular.z = self.sim.v, self.sim.w
        self.odom_pub.publish(odom)
        if self.tf_pub is not None:
            from geometry_msgs.msg import TransformStamped

            tf = TransformStamped()
            tf.header = odom.header
            tf.child_frame_id = "base_link"
            tf.transform.translation.x, tf.transform.translation.y = pose.x, pose.y
            tf.transform.rotation = odom.pose.pose.orientation
            self.tf_pub.publish(self._tf_cls(transforms=[tf]))
        if self.sim.bumped:
            self.bump_pub.publish(Bool(data=True))
            self.collisions += 1
            self.collision_pub.publish(Int32(data=self.collisions))
        if self.camera_every and self.steps % self.camera_every == 0:
            self.cam_pub.publish(rgb_to_image(self.sim.render(), Image, stamp=stamp,
                                              frame_id="front_camera"))
        if self.scan_every and self.steps % self.scan_every == 0:
            angles, ranges = self.sim.scan()
            self.scan_pub.publish(arrays_to_scan(angles, ranges, SCAN_RANGE, LaserScan,
                                                 stamp=stamp, frame_id="base_link"))
        self.clock_pub.publish(Clock(clock=stamp))  # after what was measured at this stamp
        self.gate.stepped(self.sim.time, time.monotonic())

    def destroy_node(self) -> None:
        self.sim.close()
        super().destroy_node()


def main(args=None) -> None:
    from qwen_vla_ros.nodes import spin_node

    spin_node(BaseSimNode, args)


if __name__ == "__main__":
    main()
