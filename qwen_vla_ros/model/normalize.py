"""Per-embodiment normalisation statistics, stored with the checkpoint.

A missing statistic raises MissingStatisticError naming the embodiment, the field and the key;
nothing is silently passed through.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.errors import CheckpointError, MissingStatisticError

FIELDS = ("state", "action")
KEYS = ("mean", "std")
EPS = 1e-6


class NormStats:
    """{embodiment: {"state"|"action": {"mean": [...], "std": [...]}}}."""

    def __init__(self, stats: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        self._stats = {e: {f: {k: np.asarray(v, dtype=np.float64) for k, v in fs.items()}
                           for f, fs in es.items()} for e, es in stats.items()}

    def get(self, embodiment: str, field: str, key: str, expected_len: int) -> np.ndarray:
        if embodiment not in self._stats:
            raise MissingStatisticError(
                f"normalisation statistics have no embodiment '{embodiment}' "
                f"(have {sorted(self._stats)})")
        if field not in self._stats[embodiment]:
            raise MissingStatisticError(
                f"normalisation statistics for '{embodiment}' lack '{field}'")
        if key not in self._stats[embodiment][field]:
            raise MissingStatisticError(
                f"normalisation statistics for '{embodiment}' lack '{field}.{key}'")
        value = self._stats[embodiment][field][key]
        if value.shape != (expected_len,):
            raise CheckpointError(
                f"normalisation statistic '{embodiment}.{field}.{key}' has shape "
                f"{list(value.shape)} but the embodiment needs [{expected_len}]")
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"normalisation statistic '{embodiment}.{field}.{key}' has "
                                  "non-finite values")
        return value

    def normalise(self, spec: EmbodimentSpec, field: str, x: np.ndarray) -> np.ndarray:
        n = spec.state_dim if field == "state" else spec.action_dim
        if n == 0:
            return np.zeros((*x.shape[:-1], 0))
        mean = self.get(spec.name, field, "mean", n)
        std = self.get(spec.name, field, "std", n)
        return (x - mean) / np.maximum(std, EPS)

    def denormalise(self, spec: EmbodimentSpec, field: str, x: np.ndarray) -> np.ndarray:
        n = spec.state_dim if field == "state" else spec.action_dim
        mean = self.get(spec.name, field, "mean", n)
        std = self.get(spec.name, field, "std", n)
        return x * np.maximum(std, EPS) + mean

    def validate(self, spec: EmbodimentSpec) -> None:
        """Raise now (at load time) rather than at the first inference."""
        for field, n in (("state", spec.state_dim), ("action", spec.action_dim)):
            if n == 0:
                continue
            for key in KEYS:
                self.get(spec.name, field, key, n)

    def embodiments(self) -> list[str]:
        return sorted(self._stats)

    def to_dict(self) -> dict:
        return {e: {f: {k: v.tolist() for k, v in fs.items()} for f, fs in es.items()}
                for e, es in self._stats.items()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> NormStats:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: cannot read normalisation statistics: {exc}"
                                  ) from exc
        return cls(data)

    @classmethod
    def from_dataset(cls, spec: EmbodimentSpec, states: np.ndarray, actions: np.ndarray,
                     std_floor: float = 1e-2) -> NormStats:
        """Mean and std per dimension of demonstration data (grippers included, in the
        embodiment's units): ``states`` [N, state_dim], ``actions`` [..., action_dim]. A
        dimension that barely moves gets ``std_floor``, so noise is not blown up."""
        actions = np.asarray(actions, np.float64).reshape(-1, spec.action_dim)
        states = np.asarray(states, np.float64)
        # A body that measures nothing (a base driven by velocity: state_dim 0) has no state.
        states = (states.reshape(-1, spec.state_dim) if spec.state_dim
                  else np.zeros((len(actions), 0)))
        if len(states) == 0 or len(actions) == 0:
            raise ValueError("no samples to fit normalisation statistics on")
        if not (np.all(np.isfinite(states)) and np.all(np.isfinite(actions))):
            raise ValueError("demonstration data contains NaN or inf")
        return cls({spec.name: {
            "state": {"mean": states.mean(0), "std": np.maximum(states.std(0), std_floor)},
            "action": {"mean": actions.mean(0), "std": np.maximum(actions.std(0), std_floor)}}})

    def merged(self, other: NormStats) -> NormStats:
        """These statistics with ``other``'s embodiments replacing or adding to them."""
        return NormStats({**self.to_dict(), **other.to_dict()})

    @classmethod
    def from_limits(cls, specs: Mapping[str, EmbodimentSpec]) -> NormStats:
        """Statistics of a uniform distribution over each dimension's limits.

        Used for random-init presets, which have no training data.
        """
        out: dict[str, dict] = {}
        for name, spec in specs.items():
            lo, hi = spec.lower(), spec.upper()
            mean = (lo + hi) / 2
            std = (hi - lo) / math.sqrt(12.0)
            idx = [spec.action_names.index(s) for s in spec.state]
            out[name] = {"action": {"mean": mean, "std": std},
                         "state": {"mean": mean[idx], "std": std[idx]}}
        return cls(out)
