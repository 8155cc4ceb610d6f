"""Simulated ALOHA: the MuJoCo model that gym-aloha ships (vx300s meshes, its MJCF), driven
directly through ``mujoco`` (no ROS here, no per-step rendering).

Units at this interface are the embodiment's (``config/embodiments/aloha.yaml``): 14 values,
6 arm joints (rad) + gripper opening (0 closed .. 1 open) per arm, left then right. The
fingers are slides in the model; the normalised opening maps linearly onto their travel
(gym-aloha's puppet gripper position range).

Tasks: ``transfer_cube`` and ``insertion`` with seeded object poses and gym-aloha's contact
reward (0..4; 4 = success). Episodes run at 50 Hz.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qwen_vla_ros.params import at_least, one_of, param, positive
from qwen_vla_ros.sim.lockstep import PacedSimParams

DT = 0.02
START_ARM = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])  # gym-aloha START_ARM_POSE, per arm
FINGER_OPEN, FINGER_CLOSED = 0.05800, 0.01844  # puppet finger slide (m)
ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
SIDES = ("left", "right")
TASKS = ("transfer_cube", "insertion")
CAMERAS = ("top", "angle", "front_close", "left_pillar", "right_pillar", "left_wrist",
           "right_wrist")
DISTURBANCE_TAU_S = 0.5  # correlation time of the collection disturbance (AlohaSim)

# Rig camera names (as on the real ALOHA) -> MJCF cameras.
DEFAULT_CAMERA_MAP = {"cam_high": "top", "cam_low": "angle", "cam_left_wrist": "left_wrist",
                      "cam_right_wrist": "right_wrist"}


@dataclass
class AlohaSimParams(PacedSimParams):
    """aloha_sim's parameters (the node declares them from this list)."""

    task: str = param("transfer_cube", "transfer_cube or insertion",
                      check=one_of("transfer_cube", "insertion"))
    seed: int = param(0, "seed of the first episode; each reset adds 1")
    rate_factor: float = param(1.0, "sim seconds per wall second", check=positive)
    camera_rate_hz: float = param(10.0, "image rate (0: off)", check=at_least(0.0))
    image_height: int = param(480, "rendered image height", check=at_least(16))
    image_width: int = param(640, "rendered image width", check=at_least(16))
    fast_render: bool = param(True, "no shadows/MSAA: ~4x cheaper")
    cameras: tuple[str, ...] = param(tuple(f"{k}={v}" for k, v in DEFAULT_CAMERA_MAP.items()),
                                     "rig camera name=MJCF camera")
    episode_steps: int = param(450, "steps per episode", check=at_least(1))
    auto_reset: bool = param(True, "start the next episode at the end; false: report once, "
                                   "wait for ~/reset")
    embodiment: str = param("aloha", "embodiment")
    gripper_mode: str = param("linear_position", "follower gripper operating mode at start, "
                                                 "as the Interbotix ALOHA bringup's "
                                                 "follower_modes_*.yaml sets it")
    drop_topics: tuple[str, ...] = param(("",), "topics not published (fault drills; settable "
                                               "at run time)")
    disturbance_rad: float = param(
        0.0, "collection: std (rad) of a slowly varying offset added to the arm joints' "
             "position targets in the sim, so demonstrations show the arm pushed off and the "
             "leader's commands pulling it back (DART-style recovery data); the commands "
             "recorded stay the leader's. 0: off", check=at_least(0.0))

    def __post_init__(self) -> None:
        PacedSimParams.__post_init__(self)


def fingertip_centre(data, side: str) -> np.ndarray:
    """World position of the midpoint between ``side``'s two finger geoms (MuJoCo data of a
    gym-aloha ALOHA model)."""
    a = data.geom(f"vx300s_{side}/10_left_gripper_finger").xpos
    b = data.geom(f"vx300s_{side}/10_right_gripper_finger").xpos
    return (a + b) / 2


def assets_dir() -> Path:
    import gym_aloha

    return Path(gym_aloha.__file__).resolve().parent / "assets"


def finger_to_normalised(x: np.ndarray | float) -> np.ndarray | float:
    return (np.asarray(x) - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED)


def normalised_to_finger(g: np.ndarray | float) -> np.ndarray | float:
    return FINGER_CLOSED + np.asarray(g) * (FINGER_OPEN - FINGER_CLOSED)


def sample_object_poses(task: str, seed: int) -> np.ndarray:
    """Object free-joint qpos for a seeded episode (gym-aloha's sampling ranges)."""
    rng = np.random.default_rng(seed)
    quat = [1.0, 0.0, 0.0, 0.0]
    if task == "transfer_cube":
        pos = rng.uniform([0.0, 0.4, 0.05], [0.2, 0.6, 0.05])
        return np.concatenate([pos, quat])
    if task == "insertion":
        peg = rng.uniform([0.1, 0.4, 0.05], [0.2, 0.6, 0.05])
        socket = rng.uniform([-0.2, 0.4, 0.05], [-0.1, 0.6, 0.05])
        return np.concatenate([peg, quat, socket, quat])
    raise ValueError(f"unknown task '{task}'; one of {TASKS}")


def load_model(xml_name: str, fast_render: bool = True, stiff_weld: bool = False,
               roll_spring: float = 0.0):
    """Compile one of gym-aloha's MJCF files, optionally with cheap rendering / stiff welds /
    a spring (N m/rad) pulling each forearm_roll toward 0."""
    import mujoco

    spec = mujoco.MjSpec.from_file(str(assets_dir() / xml_name))
    if fast_render:
        spec.visual.quality.shadowsize = 0
        spec.visual.quality.offsamples = 0
    if stiff_weld:
        # The shipped mocap weld is soft: the gripper lags its target and drops the cube.
        for eq in spec.equalities:
            eq.solimp[:3] = [0.9, 0.95, 0.001]
    if roll_spring > 0:
        for side in SIDES:
            joint = spec.joint(f"vx300s_{side}/forearm_roll")
            joint.stiffness = [roll_spring, 0.0, 0.0]
            joint.springref = 0.0
    return spec.compile()


@dataclass
class StepInfo:
    reward: int
    success: bool


class AlohaSim:
    """Joint-position-controlled bimanual ALOHA (gym-aloha's ``bimanual_viperx_*.xml``)."""

    def __init__(self, task: str = "transfer_cube", image_size: tuple[int, int] = (480, 640),
                 fast_render: bool = True, disturbance: float = 0.0) -> None:
        """``disturbance``: std (rad) of an offset on the 12 arm joints' targets, an
        Ornstein-Uhlenbeck process with ``DISTURBANCE_TAU_S`` correlation time, seeded by the
        episode's seed (the grippers are not disturbed)."""
        import mujoco

        if task not in TASKS:
            raise ValueError(f"unknown task '{task}'; one of {TASKS}")
        self.task = task
        self.model = load_model(f"bimanual_viperx_{task}.xml", fast_render=fast_render)
        self.data = mujoco.MjData(self.model)
        self.substeps = max(1, round(DT / self.model.opt.timestep))
        self.image_size = image_size
        self._renderer = None
        self.max_reward = 0
        self.steps = 0
        self.seed: int | None = None
        self._arm_qpos = [self._qpos_adr(f"vx300s_{s}/{j}") for s in SIDES for j in ARM_JOINTS]
        self._finger_qpos = [self._qpos_adr(f"vx300s_{s}/left_finger") for s in SIDES]
        self._mj = mujoco
        self.disturbance = float(disturbance)
        self.offset = np.zeros(12)  # the disturbance now, on [left arm 6, right arm 6]
        self._rng = np.random.default_rng(0)

    def _qpos_adr(self, joint: str) -> int:
        jid = self.model.joint(joint).id
        return int(self.model.jnt_qposadr[jid])

    # ---- episode ------------------------------------------------------------------------
    def reset(self, seed: int) -> np.ndarray:
        self._mj.mj_resetData(self.model, self.data)
        start = np.concatenate([START_ARM, [0.02239, -0.02239]])
        self.data.qpos[:16] = np.concatenate([start, start])
        self.data.qpos[16:] = sample_object_poses(self.task, seed)
        self.data.ctrl[:] = np.concatenate([start, start])
        self._mj.mj_forward(self.model, self.data)
        self.max_reward = 0
        self.steps = 0
        self.seed = seed
        self.offset = np.zeros(12)
        self._rng = np.random.default_rng([seed, 0xD157])  # apart from the object poses' stream
        return self.qpos()

    def qpos(self) -> np.ndarray:
        """Measured state in embodiment units: [left arm 6, left grip, right arm 6, right grip]."""
        q = self.data.qpos
        arm = q[self._arm_qpos]
        grip = finger_to_normalised(q[self._finger_qpos])
        return np.concatenate([arm[:6], [grip[0]], arm[6:], [grip[1]]])

    def step(self, action: np.ndarray) -> StepInfo:
        """One 50 Hz step toward absolute joint targets (embodiment units)."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (14,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 14 finite values, got {a.shape}")
        if self.disturbance > 0:  # exact OU update: stationary std = disturbance
            keep = np.exp(-DT / DISTURBANCE_TAU_S)
            self.offset = keep * self.offset + self.disturbance * np.sqrt(1 - keep ** 2) \
                * self._rng.standard_normal(12)
        ctrl = []
        for side in range(2):
            arm = a[7 * side: 7 * side + 6] + self.offset[6 * side: 6 * side + 6]
            f = float(normalised_to_finger(a[7 * side + 6]))
            ctrl += [*arm, f, -f]
        self.data.ctrl[:] = ctrl
        self._mj.mj_step(self.model, self.data, nstep=self.substeps)
        self.steps += 1
        r = self.reward()
        self.max_reward = max(self.max_reward, r)
        return StepInfo(reward=r, success=self.max_reward >= 4)

    @property
    def time(self) -> float:
        return float(self.data.time)

    # ---- reward -------------------------------------------------------------------------
    def _contacts(self) -> set[tuple[str, str]]:
        pairs = set()
        for c in self.data.contact[: self.data.ncon]:
            a = self.model.geom(c.geom1).name
            b = self.model.geom(c.geom2).name
            pairs.add((a, b))
            pairs.add((b, a))
        return pairs

    def reward(self) -> int:
        c = self._contacts()
        if self.task == "transfer_cube":
            left = ("red_box", "vx300s_left/10_left_gripper_finger") in c
            right = ("red_box", "vx300s_right/10_right_gripper_finger") in c
            table = ("red_box", "table") in c
            return 4 if left and not table else 3 if left else 2 if right and not table \
                else 1 if right else 0
        left = any(("socket-" + s, "vx300s_left/10_left_gripper_finger") in c
                   for s in ("1", "2", "3", "4"))
        right = ("red_peg", "vx300s_right/10_right_gripper_finger") in c
        peg_table = ("red_peg", "table") in c
        socket_table = any(("socket-" + s, "table") in c for s in ("1", "2", "3", "4"))
        peg_socket = any(("red_peg", "socket-" + s) in c for s in ("1", "2", "3", "4"))
        pin = ("red_peg", "pin") in c
        if pin:
            return 4
        if peg_socket and not peg_table and not socket_table:
            return 3
        if left and right and not peg_table and not socket_table:
            return 2
        return 1 if left and right else 0

    # ---- cameras ------------------------------------------------------------------------
    def render(self, camera: str) -> np.ndarray:
        if camera not in CAMERAS:
            raise ValueError(f"unknown camera '{camera}'; MJCF cameras: {CAMERAS}")
        if self._renderer is None:
            h, w = self.image_size
            self._renderer = self._mj.Renderer(self.model, height=h, width=w)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
