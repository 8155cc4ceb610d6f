"""Portable datasets: the decoded training episodes of some bags in one small folder, frames
as JPEG, so training can run where the bags cannot go (a lent GPU machine takes 64 MiB per
call and has no ROS or rosbags) or be shipped beside a checkpoint.

A pack holds exactly what the frame cache holds (``dataset.load_episodes``: samples assembled
by the live node's ``PolicyLoop``, frames resized as the model's image processor would) for
one set of ``DatasetSettings``; ``load_episodes`` reads a pack folder given as data, and
refuses one made with other settings (another preset's image size, targets or embodiment).
The frames are JPEG-compressed (lossy; quality in ``pack.json``), about 1.2 MB per 9 s
ALOHA episode at quality 90 instead of 22 MB.
"""

from __future__ import annotations

import io
import itertools
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.learning.dataset import DatasetError, DatasetSettings, Episode, Skipped

PACK_FILE = "pack.json"
FORMAT = 1


def is_pack(path: Path) -> bool:
    return (Path(path) / PACK_FILE).is_file()


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _unjpeg(data: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB"))


def write_pack(episodes: Sequence[Episode], skipped: Sequence[Skipped],
               settings: DatasetSettings, out: Path, quality: int = 90) -> dict[str, Any]:
    """Write ``episodes`` (made with ``settings``) to the folder ``out``; complete or absent
    (written beside it, then renamed). Returns the pack's description (``pack.json``)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    if not episodes:
        raise DatasetError("nothing to pack: no usable episode")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    entries = []
    for i, ep in enumerate(episodes):
        arrays: dict[str, np.ndarray] = {"frame_idx": ep.frame_idx, "states": ep.states,
                                         "actions": ep.actions, "ticks": ep.ticks}
        if ep.history_idx is not None:
            arrays.update(history_idx=ep.history_idx, history_age=ep.history_age)
        for cam, frames in ep.frames.items():
            blobs = [_jpeg(f, quality) for f in frames]
            arrays[f"jpeg_{cam}"] = np.frombuffer(b"".join(blobs), np.uint8)
            arrays[f"offsets_{cam}"] = np.cumsum([0, *map(len, blobs)])
        name = f"episode_{i:04d}.npz"
        np.savez_compressed(tmp / name, **arrays)  # samples compress; JPEG does not
        entries.append({"file": name, "bag": str(ep.bag), "instruction": ep.instruction,
                        "meta": ep.meta, "cameras": list(ep.frames), "rejected": ep.rejected,
                        "frame_shape": {c: list(f.shape[1:]) for c, f in ep.frames.items()}})
    info = {"format": FORMAT, "settings": asdict(settings), "key": settings.key(),
            "jpeg_quality": quality, "episodes": entries,
            "skipped": [{"bag": str(s.bag), "reason": s.reason} for s in skipped]}
    (tmp / PACK_FILE).write_text(json.dumps(info, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return info


def read_pack(path: Path, settings: DatasetSettings) -> tuple[list[Episode], list[Skipped]]:
    """The episodes of the pack at ``path``, frames decoded into memory; a DatasetError when
    it was made with other settings than ``settings`` (what training would assemble)."""
    path = Path(path)
    try:
        info = json.loads((path / PACK_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable {PACK_FILE}: {exc}") from exc
    if info.get("format") != FORMAT:
        raise DatasetError(f"{path}: pack format {info.get('format')}, this version reads "
                           f"{FORMAT}")
    if info["key"] != settings.key():
        theirs = DatasetSettings.from_dict(info["settings"])
        diff = {k: (getattr(theirs, k), getattr(settings, k)) for k in asdict(settings)
                if getattr(theirs, k) != getattr(settings, k)}
        raise DatasetError(f"{path}: packed with other dataset settings than this training "
                           f"uses (packed, wanted): {diff or 'cache version'}; pack again")
    episodes = []
    for e in info["episodes"]:
        try:
            z = np.load(path / e["file"])
            frames = {}
            for cam in e["cameras"]:
                data, offsets = z[f"jpeg_{cam}"], z[f"offsets_{cam}"]
                frames[cam] = np.stack([_unjpeg(data[a:b])
                                        for a, b in itertools.pairwise(offsets)])
            episodes.append(Episode(
                Path(e["bag"]), e["instruction"], e["meta"], frames, z["frame_idx"],
                z["states"], z["actions"], z["ticks"], e["rejected"],
                history_idx=z.get("history_idx"), history_age=z.get("history_age")))
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(f"{path / e['file']}: damaged pack entry: {exc}") from exc
    return episodes, [Skipped(Path(s["bag"]), s["reason"]) for s in info["skipped"]]
