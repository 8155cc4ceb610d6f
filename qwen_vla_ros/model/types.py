"""What goes into and comes out of a policy: plain numpy dataclasses, no torch, so the runtime
(PolicyLoop, executors) and offline tools can use them without loading the model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Observation:
    """One moment of the robot, as the policy needs it."""

    images: Mapping[str, np.ndarray]  # camera name -> HxWx3 uint8 RGB
    state: np.ndarray  # [state_dim], embodiment units
    instruction: str
    embodiment: str
    stamp: float = 0.0  # observation time (s), carried through to the chunk
    # Past frames, oldest first, as (label, HxWx3 uint8): given to the backbone before the
    # live cameras, each introduced by its label (e.g. "front 2.0 s ago"). VLN looks back.
    history: tuple[tuple[str, np.ndarray], ...] = ()

    def camera_inputs(self, cameras: tuple[str, ...]) -> tuple[dict[str, np.ndarray],
                                                                list[str]]:
        """(images by name, order) for the backbone: history first, then ``cameras``."""
        labels = [label for label, _ in self.history]
        clash = sorted(set(labels) & set(cameras))
        if clash:
            raise ValueError(f"history labels {clash} collide with camera names")
        return {**self.images, **dict(self.history)}, labels + list(cameras)


@dataclass
class ActionChunk:
    actions: np.ndarray  # [horizon, action_dim], embodiment units
    embodiment: str
    stamp: float  # observation time the chunk was computed from
    dt: float  # seconds between consecutive actions
    timing_ms: dict[str, float] = field(default_factory=dict)
