"""Training's state noise (``TrainConfig.state_noise``): plain tests, no ROS."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.learning.train import TrainConfig, jitter_states
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
