"""What one ALOHA variant is on its ROS 2 driver stack, as data (``config/robots/NAME.yaml``).

The embodiment (``config/embodiments/aloha.yaml``) is what the model sees: 14 dims, limits,
gripper units. A robot profile is how one rig presents that body: arm namespaces, camera
topics, the xs_sdk operating modes to set before commanding, the start and sleep poses and the
order recorded data lists the arms in. Facts come from the Interbotix/Trossen sources, cited in
each file. No rclpy here: the adapter, launch files, docs tests and dataset code read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from qwen_vla_ros.embodiment.schema import check_keys
from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.errors import ConfigError

# xs_sdk operating modes (interbotix_xs_msgs/srv/OperatingModes.srv)
XS_MODES = ("position", "ext_position", "velocity", "current", "current_based_position", "pwm",
            "linear_position")


@dataclass(frozen=True)
class SetupSettings:
    """The xs_sdk calls made before the followers take radian commands (upstream
    ``opening_ceremony``): reboot the grippers, arm group mode, gripper mode, the gripper's
    current limit register, torque on; leaders torque-off for TELEOP."""

    arm_mode: str = "position"
    gripper_mode: str = "current_based_position"
    reboot_grippers: bool = True
    gripper_current_limit: int | None = 300
    current_limit_register: str = "current_limit"
    leaders_torque_off: bool = True
    service_timeout_s: float = 5.0

    _KEYS = ("arm_mode", "gripper_mode", "reboot_grippers", "gripper_current_limit",
             "current_limit_register", "leaders_torque_off", "service_timeout_s")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> SetupSettings:
        check_keys(data, cls._KEYS, (), where)
        s = cls(**{k: data[k] for k in cls._KEYS if k in data})
        for key in ("arm_mode", "gripper_mode"):
            if getattr(s, key) not in XS_MODES:
                raise ConfigError(f"{where}.{key}: '{getattr(s, key)}' is not an xs_sdk "
                                  f"mode {XS_MODES}")
        if s.gripper_mode == "linear_position":
            raise ConfigError(f"{where}.gripper_mode: linear_position reads commands as metres "
                              "between the fingers; this package commands the motor angle")
        if not s.service_timeout_s > 0:
            raise ConfigError(f"{where}.service_timeout_s must be > 0")
        return s


@dataclass(frozen=True)
class RobotProfile:
    name: str
    description: str
    source: str  # where the facts come from
    embodiment: str
    followers: dict[str, str]  # embodiment robot -> driver namespace
    leaders: dict[str, str]  # embodiment robot -> leader namespace (TELEOP)
    cameras: dict[str, str]  # embodiment camera -> image topic
    recorded_arm_order: tuple[str, ...]  # embodiment robots, in the order recorded data lists
    start_arm_pose: tuple[float, ...]  # per arm, rad (upstream START_ARM_POSE[:6])
    start_gripper: float  # normalised opening at the start pose
    sleep_arm_pose: tuple[float, ...]  # per arm, rad (xs_sdk sleep_positions)
    move_speed: float  # rad/s (and normalised opening /s) for start and sleep moves
    setup: SetupSettings | None  # None: the driver needs no set-up calls (sim without modes)

    _KEYS = ("name", "description", "source", "embodiment", "followers", "leaders", "cameras",
             "recorded_arm_order", "start_arm_pose", "start_gripper", "sleep_arm_pose",
             "move_speed", "setup")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> RobotProfile:
        check_keys(data, cls._KEYS, ("name", "embodiment", "followers", "cameras",
                                     "start_arm_pose", "sleep_arm_pose"), where)
        where = f"{where} '{data['name']}'"

        def mapping(key: str) -> dict[str, str]:
            value = data.get(key) or {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{key}: expected a mapping")
            return {str(k): str(v) for k, v in value.items()}

        def pose(key: str) -> tuple[float, ...]:
            values = tuple(float(v) for v in data[key])
            if len(values) != 6 or not all(math.isfinite(v) for v in values):
                raise ConfigError(f"{where}.{key}: expected 6 finite joint positions (rad)")
            return values

        setup = data.get("setup", {})
        profile = cls(
            name=str(data["name"]), description=str(data.get("description", "")),
            source=str(data.get("source", "")), embodiment=str(data["embodiment"]),
            followers=mapping("followers"), leaders=mapping("leaders"),
            cameras=mapping("cameras"),
            recorded_arm_order=tuple(str(r) for r in data.get("recorded_arm_order", ())),
            start_arm_pose=pose("start_arm_pose"),
            start_gripper=float(data.get("start_gripper", 0.0)),
            sleep_arm_pose=pose("sleep_arm_pose"),
            move_speed=float(data.get("move_speed", 0.4)),
            setup=None if setup is None else SetupSettings.from_dict(setup, f"{where}.setup"))
        if not (0.0 <= profile.start_gripper <= 1.0):
            raise ConfigError(f"{where}.start_gripper: a normalised opening in [0, 1]")
        if not (math.isfinite(profile.move_speed) and profile.move_speed > 0):
            raise ConfigError(f"{where}.move_speed must be > 0")
        return profile

    # ---- against the embodiment ------------------------------------------------------------
    def check(self, spec: EmbodimentSpec) -> None:
        """Raise unless this profile can drive ``spec``: every arm and camera named."""
        where = f"robot profile '{self.name}'"
        if spec.name != self.embodiment:
            raise ConfigError(f"{where} is for embodiment '{self.embodiment}', not "
                              f"'{spec.name}'")
        missing = [r for r in spec.robots if r not in self.followers]
        if missing:
            raise ConfigError(f"{where}: no follower namespace for {missing}")
        missing = [c for c in spec.cameras if c not in self.cameras]
        if missing:
            raise ConfigError(f"{where}: has no topic for camera(s) {missing} that embodiment "
                              f"'{spec.name}' needs (it has {sorted(self.cameras)}); the policy "
                              "would wait for them forever")
        if self.recorded_arm_order and sorted(self.recorded_arm_order) != sorted(spec.robots):
            raise ConfigError(f"{where}.recorded_arm_order {list(self.recorded_arm_order)} must "
                              f"list each of {spec.robots} once")

    def pose(self, spec: EmbodimentSpec, arm_pose: tuple[float, ...],
             gripper: float) -> np.ndarray:
        """One embodiment vector: ``arm_pose`` on every arm, ``gripper`` on every gripper."""
        out = np.zeros(spec.action_dim)
        for robot in spec.robots:
            arm = [i for i in spec.dims_of(robot) if spec.action[i].gripper is None]
            if len(arm) != len(arm_pose):
                raise ConfigError(f"robot profile '{self.name}': {robot} has {len(arm)} arm "
                                  f"joints, the pose {len(arm_pose)}")
            out[arm] = arm_pose
            out[[i for i in spec.dims_of(robot) if spec.action[i].gripper is not None]] = gripper
        return out

    def start_pose(self, spec: EmbodimentSpec) -> np.ndarray:
        return self.pose(spec, self.start_arm_pose, self.start_gripper)

    def sleep_pose(self, spec: EmbodimentSpec) -> np.ndarray:
        """Grippers closed, as upstream's sleep leaves them."""
        return self.pose(spec, self.sleep_arm_pose, 0.0)

    def _recorded_index(self, spec: EmbodimentSpec) -> list[int]:
        """Embodiment dims in the recorded data's arm order."""
        return [i for r in (self.recorded_arm_order or spec.robots) for i in spec.dims_of(r)]

    def to_recorded_order(self, spec: EmbodimentSpec, values: np.ndarray) -> np.ndarray:
        """[..., action_dim] in the embodiment's arm order -> the recorded data's arm order."""
        return np.asarray(values)[..., self._recorded_index(spec)]

    def from_recorded_order(self, spec: EmbodimentSpec, values: np.ndarray) -> np.ndarray:
        idx = self._recorded_index(spec)
        out = np.empty_like(np.asarray(values, dtype=np.float64))
        out[..., idx] = values
        return out


def input_topics(spec: EmbodimentSpec, robots: list[str], profile: RobotProfile | None
                 ) -> tuple[dict[str, str], dict[str, str]]:
    """Default camera topics (by camera) and JointState topics (by robot of ``robots``, the
    state's; "robot" for an unnamed one) of a policy: the profile's, else ``CAM/image_raw``
    and ``/ROBOT/joint_states`` (``joint_states`` for an unnamed robot)."""
    if profile is not None:
        profile.check(spec)  # every camera the embodiment needs has a topic
    cams = {c: profile.cameras[c] if profile else f"{c}/image_raw" for c in spec.cameras}
    joints = {}
    for robot in robots:
        ns = profile.followers.get(robot, robot) if profile else robot
        joints[robot or "robot"] = f"/{ns}/joint_states" if robot else "joint_states"
    return cams, joints


def robots_dir() -> Path:
    from qwen_vla_ros.paths import config_dir

    return config_dir() / "robots"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in robots_dir().glob("*.yaml"))


def load_profile(name: str, directory: Path | None = None) -> RobotProfile:
    """By name from ``config/robots`` (or ``directory``), or from a YAML file's path."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        path = Path(name)
        name = path.stem
        folder = path.parent
    else:
        folder = directory or robots_dir()
        path = folder / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown robot profile '{name}'; known: "
                          f"{sorted(p.stem for p in folder.glob('*.yaml'))} (in {folder})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    profile = RobotProfile.from_dict(data, path.name)
    if profile.name != name:
        raise ConfigError(f"{path}: file name says '{name}' but name is '{profile.name}'")
    return profile
