"""What a robot is, as data: dimensions, limits, slots in the shared action space, prompt.

One embodiment = one YAML file under ``config/embodiments/``. The model only sees slot indices
and the prompt; joint names, robot namespaces, limits and gripper units live here and nowhere
else. Unknown keys are rejected by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from qwen_vla_ros.embodiment.gripper import Gripper, GripperMap
from qwen_vla_ros.embodiment.schema import check_keys
from qwen_vla_ros.errors import ConfigError

__all__ = [
    "KINDS",
    "Dim",
    "EmbodimentSpec",
    "Gripper",
    "GripperMap",
    "Leader",
    "available_embodiments",
    "check_keys",
    "load_embodiment",
]

KINDS = ("joint_position", "joint_velocity", "waypoints")
MIN_IMAGE_PIXELS = 32 * 32  # the smallest camera frame a model takes (one merged patch)


@dataclass(frozen=True)
class Dim:
    """One action/state dimension: a joint, a gripper or a waypoint coordinate."""

    name: str
    slot: int
    lower: float
    upper: float
    max_velocity: float  # per second, in the dimension's unit
    unit: str = "rad"
    robot: str | None = None  # hardware namespace, e.g. follower_left
    joint: str | None = None  # joint name in that namespace, e.g. waist
    gripper: Gripper | None = None

    _KEYS = ("name", "slot", "lower", "upper", "max_velocity", "unit", "robot", "joint", "gripper")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> Dim:
        check_keys(data, cls._KEYS, ("name", "slot", "lower", "upper", "max_velocity"), where)
        gripper = None
        if data.get("gripper") is not None:
            gripper = Gripper.from_dict(data["gripper"], f"{where}.gripper")
        dim = cls(
            name=str(data["name"]),
            slot=int(data["slot"]),
            lower=float(data["lower"]),
            upper=float(data["upper"]),
            max_velocity=float(data["max_velocity"]),
            unit=str(data.get("unit", "rad")),
            robot=data.get("robot"),
            joint=data.get("joint"),
            gripper=gripper,
        )
        if not dim.lower < dim.upper:
            raise ConfigError(
                f"{where} ({dim.name}): lower {dim.lower} must be < upper {dim.upper}")
        if not (dim.max_velocity > 0 and math.isfinite(dim.max_velocity)):
            raise ConfigError(f"{where} ({dim.name}): max_velocity must be finite and > 0")
        if dim.slot < 0:
            raise ConfigError(f"{where} ({dim.name}): slot must be >= 0")
        return dim

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "slot": self.slot, "lower": self.lower, "upper": self.upper,
            "max_velocity": self.max_velocity, "unit": self.unit,
        }
        if self.robot is not None:
            out["robot"] = self.robot
        if self.joint is not None:
            out["joint"] = self.joint
        if self.gripper is not None:
            out["gripper"] = self.gripper.to_dict()
        return out

    def measured_as(self) -> tuple[str, GripperMap | None]:
        """(joint name in the robot's JointState, map to embodiment units or None): a
        follower gripper is measured as its finger slide where the spec gives one."""
        joint = self.joint or self.name
        if self.gripper is None:
            return joint, None
        return self.gripper.observed(joint)


@dataclass(frozen=True)
class Leader:
    """A leader (teleop) arm that drives one follower namespace."""

    follower: str
    robot: str
    gripper: GripperMap | None = None

    @classmethod
    def from_dict(cls, follower: str, data: Mapping[str, Any], where: str) -> Leader:
        check_keys(data, ("leader", "gripper"), ("leader",), where)
        gripper = None
        if data.get("gripper") is not None:
            gripper = GripperMap.from_dict(data["gripper"], f"{where}.gripper")
        return cls(follower=follower, robot=str(data["leader"]), gripper=gripper)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"leader": self.robot}
        if self.gripper is not None:
            out["gripper"] = self.gripper.to_dict()
        return out


@dataclass(frozen=True)
class EmbodimentSpec:
    """A robot body as the policy and the adapters see it."""

    name: str
    prompt: str
    kind: str
    control_rate_hz: float
    horizon: int
    cameras: tuple[str, ...]
    action: tuple[Dim, ...]
    state: tuple[str, ...]  # names of action dims that are also measured (proprioception)
    description: str = ""
    teleop: tuple[Leader, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)
    # At most this many pixels per camera frame of this body, below the model's own
    # image_pixels (None: the model's): a body whose frames need less detail costs less, in a
    # checkpoint shared with one that needs more (a checkpoint stores it, as ``cameras``).
    image_pixels: int | None = None

    _KEYS = ("name", "prompt", "kind", "control_rate_hz", "horizon", "cameras", "action", "state",
             "description", "teleop", "extras", "image_pixels")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "embodiment") -> EmbodimentSpec:
        check_keys(data, cls._KEYS, ("name", "prompt", "kind", "control_rate_hz", "horizon",
                                     "cameras", "action"), where)
        name = str(data["name"])
        where = f"{where} '{name}'"
        kind = str(data["kind"])
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind '{kind}' is not one of {KINDS}")
        action = tuple(Dim.from_dict(d, f"{where}.action[{i}]")
                       for i, d in enumerate(data["action"]))
        if not action:
            raise ConfigError(f"{where}: action must list at least one dimension")
        names = [d.name for d in action]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{where}: duplicate action dimension name(s) {dupes}")
        slots = [d.slot for d in action]
        if len(set(slots)) != len(slots):
            raise ConfigError(f"{where}: two action dimensions share a slot: {slots}")
        state = tuple(str(s) for s in data.get("state", names))
        unknown_state = [s for s in state if s not in names]
        if unknown_state:
            raise ConfigError(f"{where}: state names {unknown_state} are not action dimensions")
        cameras = tuple(str(c) for c in data["cameras"])
        if len(set(cameras)) != len(cameras):
            raise ConfigError(f"{where}: duplicate camera names {list(cameras)}")
        rate = float(data["control_rate_hz"])
        horizon = int(data["horizon"])
        if not (rate > 0 and math.isfinite(rate)):
            raise ConfigError(f"{where}: control_rate_hz must be > 0")
        if horizon < 1:
            raise ConfigError(f"{where}: horizon must be >= 1")
        if not str(data["prompt"]).strip():
            raise ConfigError(f"{where}: prompt is empty")
        robots = {d.robot for d in action if d.robot}
        teleop_data = data.get("teleop") or {}
        if not isinstance(teleop_data, Mapping):
            raise ConfigError(f"{where}.teleop: expected a mapping follower -> leader")
        teleop = tuple(Leader.from_dict(str(f), v, f"{where}.teleop.{f}")
                       for f, v in teleop_data.items())
        unknown_followers = sorted({t.follower for t in teleop} - robots)
        if unknown_followers:
            raise ConfigError(f"{where}.teleop: {unknown_followers} are not robots of this "
                              f"embodiment ({sorted(robots)})")
        pixels = data.get("image_pixels")
        spec = cls(name=name, prompt=str(data["prompt"]).strip(), kind=kind,
                   control_rate_hz=rate, horizon=horizon, cameras=cameras, action=action,
                   state=state, description=str(data.get("description", "")),
                   teleop=teleop, extras=dict(data.get("extras") or {}))
        return spec if pixels is None else spec.with_image_pixels(pixels)

    @classmethod
    def from_yaml(cls, path: str | Path) -> EmbodimentSpec:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, where=str(path.name))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "description": self.description, "prompt": self.prompt,
            "kind": self.kind, "control_rate_hz": self.control_rate_hz, "horizon": self.horizon,
            "cameras": list(self.cameras), "action": [d.to_dict() for d in self.action],
            "state": list(self.state),
        }
        if self.teleop:
            out["teleop"] = {t.follower: t.to_dict() for t in self.teleop}
        if self.extras:
            out["extras"] = dict(self.extras)
        if self.image_pixels is not None:
            out["image_pixels"] = self.image_pixels
        return out

    def with_cameras(self, cameras: Sequence[str]) -> EmbodimentSpec:
        """This body seen through ``cameras`` only (a subset of its cameras, in that order):
        what a checkpoint trained on fewer cameras stores."""
        cams = tuple(cameras)
        if not cams or len(set(cams)) != len(cams) or not set(cams) <= set(self.cameras):
            raise ConfigError(f"cameras {list(cams)}: embodiment '{self.name}' has "
                              f"{list(self.cameras)} (a non-empty subset, each once)")
        return replace(self, cameras=cams)

    def with_image_pixels(self, pixels: int | None) -> EmbodimentSpec:
        """This body's camera frames capped at about ``pixels`` each (None: no cap)."""
        if pixels is not None:
            if isinstance(pixels, bool) or not isinstance(pixels, (int, np.integer)) \
                    or pixels < MIN_IMAGE_PIXELS:
                raise ConfigError(f"embodiment '{self.name}': image_pixels must be an integer "
                                  f">= {MIN_IMAGE_PIXELS}, got {pixels!r}")
            pixels = int(pixels)
        return replace(self, image_pixels=pixels)

    # ---- derived views ------------------------------------------------------------------
    @property
    def action_dim(self) -> int:
        return len(self.action)

    @property
    def state_dim(self) -> int:
        return len(self.state)

    @property
    def action_names(self) -> list[str]:
        return [d.name for d in self.action]

    @property
    def action_slots(self) -> list[int]:
        return [d.slot for d in self.action]

    @property
    def state_slots(self) -> list[int]:
        by_name = {d.name: d.slot for d in self.action}
        return [by_name[s] for s in self.state]

    @property
    def dt(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def robots(self) -> list[str]:
        """Hardware namespaces in action order (e.g. follower_left, follower_right)."""
        seen: list[str] = []
        for d in self.action:
            if d.robot and d.robot not in seen:
                seen.append(d.robot)
        return seen

    def dims_of(self, robot: str) -> list[int]:
        return [i for i, d in enumerate(self.action) if d.robot == robot]

    def leader_of(self, follower: str) -> Leader | None:
        return next((t for t in self.teleop if t.follower == follower), None)

    def dim(self, name: str) -> Dim:
        for d in self.action:
            if d.name == name:
                return d
        raise KeyError(f"embodiment '{self.name}' has no dimension '{name}'")

    def lower(self) -> np.ndarray:
        return np.array([d.lower for d in self.action], dtype=np.float64)

    def upper(self) -> np.ndarray:
        return np.array([d.upper for d in self.action], dtype=np.float64)

    def max_velocity(self) -> np.ndarray:
        return np.array([d.max_velocity for d in self.action], dtype=np.float64)

    def to_robot_units(self, values: np.ndarray) -> np.ndarray:
        """[..., action_dim] embodiment units -> robot units (grippers: normalised -> rad)."""
        out = np.array(values, dtype=np.float64, copy=True)
        for i, dim in enumerate(self.action):
            if dim.gripper is not None:
                out[..., i] = dim.gripper.to_robot(out[..., i])
        return out

    def check_width(self, width: int) -> None:
        """Raise if a slot does not fit a model's unified action width."""
        too_big = [d.name for d in self.action if d.slot >= width]
        if too_big:
            raise ConfigError(
                f"embodiment '{self.name}': slots of {too_big} do not fit action width {width}")


def load_embodiment(name_or_path: str | Path, directory: str | Path | None = None
                    ) -> EmbodimentSpec:
    """Load by name from ``config/embodiments`` (or ``directory``), or from a YAML path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return EmbodimentSpec.from_yaml(candidate)
    from qwen_vla_ros.paths import embodiments_dir

    folder = Path(directory) if directory is not None else embodiments_dir()
    path = folder / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"unknown embodiment '{name_or_path}'; known: {known} (in {folder})")
    spec = EmbodimentSpec.from_yaml(path)
    if spec.name != str(name_or_path):
        raise ConfigError(f"{path}: file name says '{name_or_path}' but name is '{spec.name}'")
    return spec


def available_embodiments(directory: str | Path | None = None) -> list[str]:
    from qwen_vla_ros.paths import embodiments_dir

    folder = Path(directory) if directory is not None else embodiments_dir()
    return sorted(p.stem for p in folder.glob("*.yaml"))
