"""Training's sampling options: state noise (``TrainConfig.state_noise``), the share of
samples from the episodes' starts (``start_share``) and shifted frames (``shift_pixels``):
plain tests, no ROS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.learning.dataset import Episode
from qwen_vla_ros.learning.train import (
    Samples,
    TrainConfig,
    jitter_states,
    shift_frame,
    shift_images,
)
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


def test_a_shifted_frame_moves_its_content_and_repeats_its_edges():
    image = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    out = shift_frame(image, 2, -1)  # 2 right, 1 up
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0:4, 2:6], image[1:5, 0:4])
    np.testing.assert_array_equal(out[:4, 0], image[1:5, 0])  # left edge repeated
    np.testing.assert_array_equal(out[:4, 1], image[1:5, 0])
    np.testing.assert_array_equal(out[4, 2:], image[4, :4])  # bottom row repeated
    np.testing.assert_array_equal(shift_frame(image, 0, 0), image)


def test_one_shift_per_observation_for_all_its_frames_within_the_bound():
    rng = np.random.default_rng(0)
    obs = []
    for i in range(200):
        image = np.zeros((40, 40, 3), np.uint8)
        image[20, 20] = 255  # a marker in the middle
        obs.append(Observation(images={"a": image, "b": image.copy()}, state=np.zeros(2),
                               instruction="x", embodiment="aloha", stamp=float(i),
                               history=(("a@-1.0s", image.copy()),)))
    out = shift_images(obs, rng, 3)
    moves = set()
    for o, src in zip(out, obs, strict=True):
        where = {name: tuple(np.argwhere(im[..., 0] == 255)[0])
                 for name, im in [*o.images.items(), *o.history]}
        assert len(set(where.values())) == 1  # every frame of a sample the same way
        y, x = next(iter(where.values()))
        assert abs(y - 20) <= 3 and abs(x - 20) <= 3
        moves.add((y - 20, x - 20))
        assert src.images["a"][20, 20, 0] == 255  # the sample itself is not changed
    assert len(moves) == 49  # all of the 7 x 7 offsets drawn


def test_a_negative_shift_is_refused():
    with pytest.raises(ConfigError, match="shift_pixels"):
        TrainConfig(steps=1, shift_pixels=-1)


def test_fewer_than_one_noise_sample_is_refused():
    with pytest.raises(ConfigError, match="noise_samples"):
        TrainConfig(steps=1, noise_samples=0)
