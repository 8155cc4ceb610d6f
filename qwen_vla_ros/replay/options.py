"""``qwen-vla-ros replay``'s options, apart from the replay itself: building the CLI's parser
imports only this (no rosbags, torch or rclpy), so every other command runs without them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qwen_vla_ros.options import opt


@dataclass
class ReplayOptions:
    """``qwen-vla-ros replay``'s options: the CLI is made from these fields."""

    bag: Path = opt(help="rosbag2 directory (MCAP or sqlite3) or file", type=Path,
                    positional=True)
    checkpoint: Path = opt(help="policy checkpoint directory", type=Path)
    out: Path = opt(help="output directory", type=Path)
    embodiment: str | None = opt(None, "default: as recorded, or the checkpoint's only one")
    start: float | None = opt(None, "s since the bag's first message", type=float)
    end: float | None = opt(None, "s since the bag's first message", type=float)
    instruction: str | None = opt(None, "default: the recorded one")
    ticks: str = opt("auto", "recorded: the live node's ticks, inputs and seeds (reproduces "
                             "its chunks); rate: every 1/--rate s",
                     choices=["auto", "recorded", "rate"])
    rate_hz: float = opt(5.0, "inference rate for --ticks rate", flag="--rate", type=float)
    max_age: float = opt(0.3, "max observation age (s), as config/policy_aloha.yaml",
                         type=float)
    flow_steps: int = opt(10, "flow steps (recorded ticks: as recorded)", flag="--steps",
                          type=int)
    seed: int = opt(0, "base seed (recorded ticks: as recorded)", type=int)
    rtc_prefix_steps: int | None = opt(None, "committed prefix steps for real-time chunking "
                                             "(default: recorded ticks each as recorded, "
                                             "else 0)", type=int)
    rtc_soft_steps: int | None = opt(None, "steps after the prefix guided softly toward the "
                                           "previous plan (default: recorded ticks each as "
                                           "recorded, else 0)", type=int)
    device: str = opt("cpu", "torch device")
    dtype: str = opt("float32", "model dtype", choices=["float32", "bfloat16"])
    policy_ns: str | None = opt(None, "namespace of the recorded policy topics (default: "
                                      "/policy_node or /navigation_node, whichever the bag has)")
    camera_topics: dict[str, str] = opt(help="CAMERA=TOPIC (default /CAMERA/image_raw)",
                                        flag="--camera-topic", mapping=True)
    joint_state_topics: dict[str, str] = opt(help="ROBOT=TOPIC (default /ROBOT/joint_states)",
                                             flag="--joint-state-topic", mapping=True)
    ghost_lookahead_s: float = opt(0.5, "as the adapters' ~/predicted_joint_states", cli=False)
    history_frames: int | None = opt(None, "past frames (VLN); default: as recorded, else 0",
                                     cli=False)
    history_period: float | None = opt(None, cli=False)
    progress: bool = opt(True, "no progress bar", negate="--no-progress")
