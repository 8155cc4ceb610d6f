"""Locate the package's installed data (config/, urdf/, launch/) without requiring ROS."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "qwen_vla_ros"


def share_dir() -> Path:
    """Directory holding config/, urdf/ and launch/.

    Order: $QWEN_VLA_ROS_SHARE, the ament index (colcon or pip install with AMENT_PREFIX_PATH),
    <sys.prefix>/share/qwen_vla_ros (pip install), then the source tree (editable install).
    """
    env = os.environ.get("QWEN_VLA_ROS_SHARE")
    if env:
        return Path(env)
    source_root = Path(__file__).resolve().parents[1]
    if (source_root / "config" / "embodiments").is_dir():
        # Editable install or running from a checkout: the tree being edited wins.
        return source_root
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:
        pass
    return Path(sys.prefix) / "share" / PACKAGE


def config_dir() -> Path:
    return share_dir() / "config"


def embodiments_dir() -> Path:
    return config_dir() / "embodiments"


# Small checkpoints trained in this repo, shipped in checkpoints/, by the embodiment they run
# (docs/learning.md, docs/benchmarks.md): what the demos run when given none.
SHIPPED_CHECKPOINTS = {"aloha": "aloha_transfer_cube_tiny", "vln": "vln_goto_tiny"}
SHIPPED_CHECKPOINT = SHIPPED_CHECKPOINTS["aloha"]
# One set of weights for both bodies (docs/benchmarks.md, "Phase 3" and its confirmation);
# the demos keep the single-body ones above by default (--checkpoint picks this one).
SHIPPED_JOINT_CHECKPOINT = "aloha_vln_joint_tiny"


def shipped_checkpoint(name: str = SHIPPED_CHECKPOINT) -> Path | None:
    """A small trained checkpoint shipped with the package (checkpoints/<name>), or None."""
    path = share_dir() / "checkpoints" / name
    return path if (path / "qwen_vla.json").is_file() else None
