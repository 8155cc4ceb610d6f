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
    ({"steps": 10, "keep_every": -5}, "keep_every must be >= 0"),
    ({"steps": 10, "lead": "vln"}, "lead and lead_share go together"),
    ({"steps": 10, "lead_share": 0.2}, "lead and lead_share go together"),
    ({"steps": 10, "lead": "vln", "lead_share": 1.0}, "lead and lead_share go together"),
    ({"steps": 10, "lead": "vln", "lead_share": float("nan")}, "lead and lead_share"),
])
def test_bad_settings_are_refused_by_name(bad, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**bad)


def test_good_settings_pass():
    cfg = TrainConfig(minutes=1.0, val_samples=256)
    assert cfg.val_samples == 256 and cfg.steps is None


def _episodes(seeds):
    from pathlib import Path

    import numpy as np

    from qwen_vla_ros.learning.dataset import Episode

    empty = np.zeros((0,))
    return [Episode(Path(f"ep{i}"), "", {} if s is None else {"seed": s}, {}, empty, empty,
                    empty, empty) for i, s in enumerate(seeds)]


def test_validation_holds_out_whole_starts():
    """collect --colours records one start once per colour: its episodes fall on one side of
    the split; with one seed per episode the split is the per-episode one it always was."""
    import numpy as np

    from qwen_vla_ros.learning.train import split_episodes

    eps = _episodes([s for s in range(1000, 1020) for _ in range(4)])
    for seed in range(5):
        train, val = split_episodes(eps, 0.1, seed)
        assert len(val) == 8 and len(train) == 72
        assert not {e.meta["seed"] for e in val} & {e.meta["seed"] for e in train}
    unique = _episodes([*range(30), None, None])
    train, val = split_episodes(unique, 0.1, 3)
    order = np.random.default_rng(3).permutation(len(unique))
    assert [e.bag for e in val] == [unique[i].bag for i in sorted(order[:3])]
    assert len(train) + len(val) == len(unique)
