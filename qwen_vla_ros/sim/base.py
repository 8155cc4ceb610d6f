"""A small MuJoCo world for VLN: a 6 x 6 m room with distinct coloured objects and a unicycle
base carrying a forward RGB camera. No ROS.

The base is kinematic: (v, w) commands are integrated exactly along an arc, the result is
written to its planar joints and MuJoCo renders the camera. A move that would hit a wall or
an object is refused (the base stays put and ``bumped`` is set), so tests can tell a collision
from a stop. Wheels, slip and inertia are not simulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qwen_vla_ros.params import at_least, one_of, param, positive
from qwen_vla_ros.runtime.navigation import Pose2D, wrap
from qwen_vla_ros.sim.lockstep import PacedSimParams

ROOM = 3.0  # half size (m): the room spans [-3, 3] x [-3, 3]
BASE_RADIUS = 0.2
CAMERA_X = 0.2  # m ahead of the base centre: the front camera
CAMERA_FOVY_DEG = 70.0  # its vertical field of view
SCAN_HEIGHT = 0.15  # m: the planar range scanner's height, below every object's top
SCAN_RAYS = 360  # one per degree, all round
SCAN_RANGE = 10.0  # m: returns beyond are "nothing" (inf), as a LaserScan's range_max


@dataclass(frozen=True)
class SceneObject:
    name: str
    shape: str  # box | cylinder | sphere
    x: float
    y: float
    radius: float  # footprint radius for collisions
    rgba: tuple[float, float, float, float]

    @property
    def colour(self) -> str:
        """The colour word instructions name it by: the first part of its name."""
        return self.name.split("_")[0]


OBJECTS = (
    SceneObject("red_box", "box", 2.0, 1.0, 0.3, (0.85, 0.1, 0.1, 1)),
    SceneObject("green_cylinder", "cylinder", -1.5, 2.0, 0.25, (0.1, 0.7, 0.2, 1)),
    SceneObject("blue_sphere", "sphere", 1.5, -2.0, 0.25, (0.1, 0.3, 0.9, 1)),
    SceneObject("yellow_box", "box", -2.0, -1.5, 0.3, (0.95, 0.85, 0.1, 1)),
)


def _geom(o: SceneObject) -> str:
    rgba = " ".join(f"{c:g}" for c in o.rgba)
    if o.shape == "box":
        size, z = f"{o.radius * 0.7:g} {o.radius * 0.7:g} 0.3", 0.3
    elif o.shape == "cylinder":
        size, z = f"{o.radius:g} 0.35", 0.35
    else:
        size, z = f"{o.radius:g}", o.radius
    return (f'<geom name="{o.name}" type="{o.shape}" size="{size}" pos="{o.x:g} {o.y:g} {z:g}" '
            f'rgba="{rgba}"/>')


def scene_xml() -> str:
    walls = []
    for name, pos, size in (("wall_n", f"0 {ROOM} 0.5", f"{ROOM} 0.05 0.5"),
                            ("wall_s", f"0 {-ROOM} 0.5", f"{ROOM} 0.05 0.5"),
                            ("wall_e", f"{ROOM} 0 0.5", f"0.05 {ROOM} 0.5"),
                            ("wall_w", f"{-ROOM} 0 0.5", f"0.05 {ROOM} 0.5")):
        walls.append(f'<geom name="{name}" type="box" pos="{pos}" size="{size}" '
                     'rgba="0.8 0.78 0.72 1"/>')
    return f"""
<mujoco model="vln_room">
  <visual><headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5"/></visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.55 0.55 0.55" rgb2="0.45 0.45 0.45"
             width="256" height="256"/>
    <material name="floor" texture="grid" texrepeat="6 6"/>
  </asset>
  <worldbody>
    <light pos="0 0 4" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="{ROOM} {ROOM} 0.1" material="floor"/>
    {"".join(walls)}
    {"".join(_geom(o) for o in OBJECTS)}
    <body name="base" pos="0 0 0">
      <joint name="base_x" type="slide" axis="1 0 0"/>
      <joint name="base_y" type="slide" axis="0 1 0"/>
      <joint name="base_yaw" type="hinge" axis="0 0 1"/>
      <geom name="chassis" type="cylinder" size="{BASE_RADIUS} 0.08" pos="0 0 0.1"
            rgba="0.15 0.15 0.18 1" contype="0" conaffinity="0"/>
      <geom name="nose" type="box" size="0.05 0.03 0.02" pos="0.18 0 0.2" rgba="1 1 1 1"
            contype="0" conaffinity="0"/>
      <camera name="front" pos="{CAMERA_X:g} 0 0.45" xyaxes="0 -1 0 0.17 0 0.985"
              fovy="{CAMERA_FOVY_DEG:g}"/>
    </body>
  </worldbody>
</mujoco>
"""


def horizontal_fov(image_size: tuple[int, int] = (240, 320)) -> float:
    """rad: the front camera's horizontal field of view in an image of (height, width)
    (MuJoCo's fovy is vertical; square pixels)."""
    height, width = image_size
    return 2.0 * math.atan(math.tan(math.radians(CAMERA_FOVY_DEG) / 2.0) * width / height)


class BaseSim:
    """The room and the base. ``step(v, w, dt)`` moves it; ``render()`` is the front camera."""

    def __init__(self, image_size: tuple[int, int] = (240, 320),
                 start: Pose2D | None = None) -> None:
        import mujoco

        self._mj = mujoco
        self.model = mujoco.MjModel.from_xml_string(scene_xml())
        self.data = mujoco.MjData(self.model)
        self.image_size = image_size
        self._renderer = None
        self.time = 0.0
        self.v = 0.0
        self.w = 0.0
        self.bumped = False
        self._base_body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "base")
        self.reset(start or Pose2D())

    def reset(self, pose: Pose2D) -> None:
        if self.collides(pose.x, pose.y):
            raise ValueError(f"start pose {pose} is inside a wall or an object")
        self.pose = pose
        self.v = self.w = 0.0
        self._write()

    def _write(self) -> None:
        self.data.qpos[:3] = (self.pose.x, self.pose.y, self.pose.yaw)
        self._mj.mj_forward(self.model, self.data)

    @staticmethod
    def collides(x: float, y: float) -> bool:
        if abs(x) > ROOM - BASE_RADIUS - 0.05 or abs(y) > ROOM - BASE_RADIUS - 0.05:
            return True
        return any(math.hypot(x - o.x, y - o.y) < o.radius + BASE_RADIUS for o in OBJECTS)

    def step(self, v: float, w: float, dt: float) -> Pose2D:
        if not (math.isfinite(v) and math.isfinite(w)):
            v, w = 0.0, 0.0  # a robot base ignores garbage; the node never sends it anyway
        p = self.pose
        if abs(w) < 1e-9:
            x, y = p.x + v * dt * math.cos(p.yaw), p.y + v * dt * math.sin(p.yaw)
        else:
            r = v / w
            x = p.x + r * (math.sin(p.yaw + w * dt) - math.sin(p.yaw))
            y = p.y - r * (math.cos(p.yaw + w * dt) - math.cos(p.yaw))
        yaw = float(wrap(p.yaw + w * dt))
        self.bumped = self.collides(x, y) and (x, y) != (p.x, p.y)
        if self.bumped:
            x, y, v = p.x, p.y, 0.0
        self.pose = Pose2D(x, y, yaw)
        self.v, self.w = v, w
        self.time += dt
        self._write()
        return self.pose

    def scan(self, rays: int = SCAN_RAYS) -> tuple[np.ndarray, np.ndarray]:
        """A planar range scan from the base centre at ``SCAN_HEIGHT``: (angles in the base
        frame from -pi, counter-clockwise; ranges in m from the centre, inf where nothing is
        within ``SCAN_RANGE``). MuJoCo's ray casting against the walls and objects (the
        base's own geoms excluded), as a LaserScan reports them."""
        mj = self._mj
        angles = -math.pi + np.arange(rays) * (2 * math.pi / rays)
        world = angles + self.pose.yaw
        vec = np.stack([np.cos(world), np.sin(world), np.zeros(rays)], axis=1).reshape(-1)
        geom = np.zeros(rays, np.int32)
        dist = np.zeros(rays, np.float64)
        origin = np.array([self.pose.x, self.pose.y, SCAN_HEIGHT])
        mj.mj_multiRay(self.model, self.data, origin, vec, None, 1, self._base_body, geom,
                       dist, None, rays, SCAN_RANGE)
        ranges = np.where((geom >= 0) & (dist >= 0) & (dist <= SCAN_RANGE), dist, np.inf)
        return angles, ranges

    def render(self) -> np.ndarray:
        if self._renderer is None:
            h, w = self.image_size
            self._renderer = self._mj.Renderer(self.model, height=h, width=w)
        self._renderer.update_scene(self.data, camera="front")
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _colours_error(text: str) -> str | None:
    from qwen_vla_ros.sim.vln_task import parse_colours

    try:
        parse_colours(text)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass
class BaseSimParams(PacedSimParams):
    """base_sim's parameters (the node declares them from this list)."""

    rate_factor: float = param(1.0, "sim seconds per wall second", check=positive)
    camera_rate_hz: float = param(5.0, "image rate (0: off)", check=at_least(0.0))
    scan_rate_hz: float = param(10.0, "LaserScan rate (0: off)", check=at_least(0.0))
    image_height: int = param(240, "rendered image height", check=at_least(16))
    image_width: int = param(320, "rendered image width", check=at_least(16))
    cmd_timeout: float = param(0.5, "s without cmd_vel -> stop", check=positive)
    start_x: float = param(0.0, "start x (m)")
    start_y: float = param(0.0, "start y (m)")
    start_yaw: float = param(0.0, "start yaw (rad)")
    task: str = param("", "'' (free driving from start_*) or vln_goto (seeded episodes: start "
                          "pose and instruction from sim/vln_task.py, ~/episode)",
                      check=one_of("", "vln_goto"))
    seed: int = param(0, "vln_goto: seed of the first episode; each ~/reset adds 1")
    colours: str = param("", "vln_goto: e.g. 'red,green,blue,yellow': each start pose once "
                             "per colour (the language check); '' = the seed's colour",
                         check=lambda v: _colours_error(v))
    beside: bool = param(False, "vln_goto with colours: each start beside one of the colours' "
                                "objects, once per other colour (sim/vln_task.sample_beside)")

    def __post_init__(self) -> None:
        PacedSimParams.__post_init__(self)
