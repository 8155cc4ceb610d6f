"""Training settings are checked when they are made, before any data is read."""

from __future__ import annotations

import pytest

from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.learning.train import TrainConfig


@pytest.mark.parametrize("bad, match", [
    ({}, "give --steps or --minutes"),
    ({"steps": 10, "batch": 0}, "batch must be >= 1"),
    ({"steps": 10, "prefix_fraction": 1.5}, "prefix_fraction"),
    ({"steps": 10, "state_noise": float("nan")}, "state_noise"),
    ({"steps": 10, "start_share": -0.1}, "start_share"),
    ({"steps": 10, "shift_pixels": -1}, "shift_pixels"),
    ({"steps": 10, "noise_samples": 0}, "noise_samples"),
    ({"steps": 10, "val_samples": 0}, "val_samples must be >= 1"),
])
def test_bad_settings_are_refused_by_name(bad, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**bad)


def test_good_settings_pass():
    cfg = TrainConfig(minutes=1.0, val_samples=256)
    assert cfg.val_samples == 256 and cfg.steps is None
