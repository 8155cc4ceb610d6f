"""Who drives the robot: TELEOP (leader arms), POLICY (action chunks) or HOLD (stand still)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from qwen_vla_ros.params import param


class Mode(str, Enum):
    TELEOP = "TELEOP"
    POLICY = "POLICY"
    HOLD = "HOLD"

    @classmethod
    def parse(cls, text: str) -> Mode:
        try:
            return cls(text.strip().upper())
        except ValueError:
            raise ValueError(f"unknown mode '{text}'; one of {[m.value for m in cls]}") from None


# mode_manager's services (std_srvs/Trigger ~/<name>) and the mode each one asks for
MODE_SERVICES: dict[str, Mode] = {"engage_teleop": Mode.TELEOP, "engage_policy": Mode.POLICY,
                                  "hold": Mode.HOLD}


@dataclass
class Transition:
    stamp: float
    previous: Mode
    mode: Mode
    reason: str


@dataclass
class ModeMachine:
    """Every switch is allowed and immediate; the handover ramp into POLICY is the executor's
    velocity limit starting from the measured pose (see ChunkExecutor.reset)."""

    mode: Mode = Mode.HOLD
    history: list[Transition] = field(default_factory=list)

    def request(self, mode: Mode | str, stamp: float, reason: str = "") -> bool:
        """Switch; returns True if the mode changed."""
        mode = Mode.parse(mode) if isinstance(mode, str) else mode
        if mode == self.mode:
            return False
        self.history.append(Transition(stamp, self.mode, mode, reason))
        self.mode = mode
        return True


@dataclass
class ModeManagerParams:
    """mode_manager's parameters (the node declares them from this list)."""

    marker_frame: str = param("world", "frame the RViz mode markers are drawn in")
    adapters: tuple[str, ...] = param(("",), "adapter node names whose ~/effective_mode must "
                                             "agree with a switch ([] or ['']: none)")
