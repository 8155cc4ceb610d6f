"""The main job. Until the simulated ALOHA lands this is the model smoke path: make (or load) a
checkpoint, feed the policy synthetic camera frames and joint states for N seconds, check every
chunk, and write a summary."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.model.bench import percentile
from qwen_vla_ros.model.policy import Observation, QwenVLAPolicy


def ensure_checkpoint(out: Path, checkpoint: Path | None, seed: int) -> Path:
    if checkpoint is not None:
        return checkpoint
    path = out / "checkpoint"
    if not (path / "qwen_vla.json").exists():
        from qwen_vla_ros.model.presets import build_preset

        build_preset("tiny", seed=seed).save_pretrained(path)
    return path


def run_model_smoke(out: Path, seconds: float, checkpoint: Path | None = None,
                    seed: int = 0) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    ckpt = ensure_checkpoint(out, checkpoint, seed)
    policy = QwenVLAPolicy.from_pretrained(ckpt)
    spec = policy.spec("aloha")
    rng = np.random.default_rng(seed)
    base = {c: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for c in spec.cameras}
    state = (spec.lower() + spec.upper()) / 2
    latencies: list[float] = []
    jumps: list[float] = []
    prev_last: np.ndarray | None = None
    t_end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < t_end or i == 0:
        images = {c: np.roll(img, 4 * i, axis=1) for c, img in base.items()}
        obs = Observation(images=images, state=state, instruction="transfer the cube",
                          embodiment="aloha", stamp=float(i))
        chunk = policy.predict(obs, seed=seed + i)
        if not np.all(np.isfinite(chunk.actions)):
            raise RuntimeError(f"chunk {i} has non-finite actions")
        latencies.append(chunk.timing_ms["total"])
        if prev_last is not None:
            jumps.append(float(np.abs(chunk.actions[0] - prev_last).max()))
        prev_last = chunk.actions[-1]
        state = chunk.actions[min(10, len(chunk.actions) - 1)]
        i += 1
    summary = {
        "mode": "model smoke (no simulator yet)", "checkpoint": str(ckpt), "chunks": i,
        "chunk_shape": list(chunk.actions.shape),
        "inference_ms": {"p50": statistics.median(latencies), "p99": percentile(latencies, 99)},
        "max_chunk_boundary_jump": max(jumps) if jumps else 0.0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
