"""Training's sampling options: state noise (``TrainConfig.state_noise``) and the share of
samples from the episodes' starts (``start_share``): plain tests, no ROS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.learning.dataset import Episode
from qwen_vla_ros.learning.train import Samples, TrainConfig, jitter_states
from qwen_vla_ros.model.types import Observation


def observations(n: int, state: np.ndarray) -> list[Observation]:
    image = np.zeros((4, 4, 3), np.uint8)
    return [Observation(images={"cam": image}, state=state.copy(), instruction="x",
                        embodiment="aloha", stamp=float(i)) for i in range(n)]


def test_each_dimension_gets_noise_of_its_own_std_and_the_rest_is_kept():
    state = np.array([0.5, -1.0, 2.0])
    std = np.array([0.1, 0.0, 0.3])
    obs = observations(4000, state)
    out = jitter_states(obs, np.random.default_rng(0), std)
    states = np.stack([o.state for o in out])
    np.testing.assert_allclose(states.mean(0), state, atol=0.02)
    np.testing.assert_allclose(states.std(0), std, rtol=0.05, atol=1e-12)
    assert [o.stamp for o in out] == [o.stamp for o in obs]
    assert out[0].images is obs[0].images and out[0].instruction == "x"
    np.testing.assert_array_equal(obs[0].state, state)  # the sample itself is not changed


def test_the_noise_is_seeded():
    obs = observations(3, np.zeros(2))
    a = jitter_states(obs, np.random.default_rng(1), np.ones(2))
    b = jitter_states(obs, np.random.default_rng(1), np.ones(2))
    np.testing.assert_array_equal([o.state for o in a], [o.state for o in b])


def test_a_negative_noise_is_refused():
    with pytest.raises(ConfigError, match="state_noise"):
        TrainConfig(steps=1, state_noise=-0.1)


def episode(t0: float, n: int) -> Episode:
    return Episode(bag=Path("x"), instruction="x", meta={}, frames={"cam": np.zeros((1, 4, 4, 3))},
                   frame_idx=np.zeros((n, 1), np.int64), states=np.zeros((n, 2)),
                   actions=np.zeros((n, 3, 2)), ticks=t0 + 0.1 * np.arange(n))


def test_the_starts_are_the_first_seconds_of_each_episode():
    samples = Samples([episode(18.48, 30), episode(7.0, 12)], "aloha", ["cam"])
    starts = samples.starts(1.45)
    assert [samples.index[k] for k in starts] == [(0, i) for i in range(15)] + [
        (1, i) for i in range(12)]  # the second is shorter than that
    assert [samples.index[k] for k in samples.starts(0.25)] == [(0, 0), (0, 1), (0, 2),
                                                                (1, 0), (1, 1), (1, 2)]


def test_a_start_share_outside_0_1_is_refused():
    with pytest.raises(ConfigError, match="start_share"):
        TrainConfig(steps=1, start_share=1.5)
    with pytest.raises(ConfigError, match="start_seconds"):
        TrainConfig(steps=1, start_share=0.5, start_seconds=0.0)
