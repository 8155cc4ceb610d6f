"""A trained checkpoint made fit to ship (``qwen-vla-ros export CKPT OUT``).

Copies what ``load_policy`` reads (the config, norm stats, decoder weights, backbone and
embodiment folders) and the loss plot, and leaves out the optimiser state (``train_state.pt``,
only ``train --resume`` needs it). ``train_log.json`` is rewritten so that it names no folder of
the machine that trained: every bag path (any absolute path) becomes its folder name
(``episode_01000``), and the per-step history keeps the validation records and every
``every``-th training step. The training seeds stay, so ``eval`` still refuses to evaluate on
them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.learning.train import LOG_FILE
from qwen_vla_ros.model.policy import (
    BACKBONE_DIR,
    CONFIG_FILE,
    DECODER_FILE,
    EMBODIMENTS_DIR,
    STATS_FILE,
)

PLOT_FILE = "train.png"
_PATH_KEYS = ("train_episodes", "val_episodes", "bag", "init")
_ROS_NAME_KEYS = ("camera_topics",)  # "/cam_high/image_raw" is a topic, not a machine path


def _names(value: Any) -> Any:
    """A path (or list of paths) reduced to its last component; None stays None."""
    if isinstance(value, list):
        return [_names(v) for v in value]
    return None if value is None else Path(str(value)).name


def portable_log(log: dict[str, Any], every: int = 50) -> dict[str, Any]:
    """``log`` (a train_log.json) without machine paths and with a thinned history."""
    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: _names(v) if k in _PATH_KEYS else v if k in _ROS_NAME_KEYS else walk(v)
                    for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        if isinstance(obj, str) and obj.startswith("/"):  # any other absolute path (best's out)
            return Path(obj).name
        return obj

    out = walk({k: v for k, v in log.items() if k != "history"})
    history = log.get("history", [])
    last = history[-1]["step"] if history else None
    out["history"] = [h for h in history if "val_loss" in h or h["step"] % every == 0
                      or h["step"] == last]
    out["history_every"] = every
    return out


def export_checkpoint(src: Path, dst: Path, every: int = 50) -> Path:
    """Write the shippable copy of checkpoint ``src`` to ``dst`` (replaced if it exists)."""
    src, dst = Path(src), Path(dst)
    if every < 1:
        raise ConfigError(f"export: --history-every must be >= 1, got {every}")
    missing = [n for n in (CONFIG_FILE, STATS_FILE, DECODER_FILE, BACKBONE_DIR, EMBODIMENTS_DIR,
                           LOG_FILE) if not (src / n).exists()]
    if missing:
        raise ConfigError(f"{src}: not a trained checkpoint (no {', '.join(missing)})")
    if dst.resolve() == src.resolve():
        raise ConfigError("export: the destination is the checkpoint itself")
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in (CONFIG_FILE, STATS_FILE, DECODER_FILE, PLOT_FILE):
        if (src / name).exists():
            shutil.copy2(src / name, tmp / name)
    for name in (BACKBONE_DIR, EMBODIMENTS_DIR):
        shutil.copytree(src / name, tmp / name)
    log = json.loads((src / LOG_FILE).read_text())
    (tmp / LOG_FILE).write_text(json.dumps(portable_log(log, every), indent=1))
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst
