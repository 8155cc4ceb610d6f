"""Strict mappings for every YAML the package reads: unknown keys are rejected by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qwen_vla_ros.errors import ConfigError


def check_keys(data: Mapping[str, Any], allowed: Sequence[str], required: Sequence[str],
               where: str) -> None:
    """Reject unknown keys and report missing ones, by name."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
