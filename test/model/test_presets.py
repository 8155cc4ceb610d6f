"""A trained checkpoint widened to larger frames for a new body (train --init
--image-pixels): the bodies it knows see what they saw before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import camera_images

from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.model.policy import Observation, QwenVLAPolicy
from qwen_vla_ros.model.presets import resize_position_grid, with_more_pixels


def test_a_position_grid_is_resampled_as_a_plane_would_be():
    """Bilinear resampling with aligned corners is exact on a plane: each channel of a 4x4
    grid that is a + b*row + c*col reads the same plane on the 7x7 grid."""
    rng = np.random.default_rng(0)
    a, b, c = (torch.tensor(rng.normal(size=3), dtype=torch.float32) for _ in range(3))

    def plane(side: int) -> torch.Tensor:
        r, q = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side),
                              indexing="ij")
        return (a + b * r.reshape(-1, 1) + c * q.reshape(-1, 1))  # [side*side, 3]

    torch.testing.assert_close(resize_position_grid(plane(4), 49), plane(7), atol=1e-5,
                               rtol=0)
    with pytest.raises(ConfigError, match="square"):
        resize_position_grid(plane(4), 50)


def _with_a_strong_grid(path) -> QwenVLAPolicy:
    """The checkpoint with its position table drawn large (std 1, as a trained tower's can
    be; at random init it is too small to move the actions)."""
    policy = QwenVLAPolicy.from_pretrained(path)
    table = next(v for k, v in policy.backbone.model.state_dict().items()
                 if k.endswith("pos_embed.weight"))
    with torch.no_grad():
        table.copy_(torch.randn(table.shape, generator=torch.Generator().manual_seed(0)))
    return policy


def test_more_pixels_keeps_what_a_known_body_sees(tiny_checkpoint):
    before = _with_a_strong_grid(tiny_checkpoint)
    old = before.config.image_pixels
    after = with_more_pixels(_with_a_strong_grid(tiny_checkpoint), 256 * 320)
    assert after.config.image_pixels == 256 * 320
    assert after.backbone.pixels.resize_rule[2] == 256 * 320  # a new body's frames
    assert after.spec("aloha").image_pixels == old  # the known body's frames, as before
    table = {k: v.shape for k, v in after.backbone.model.state_dict().items()}
    grew = [k for k, v in before.backbone.model.state_dict().items() if table[k] != v.shape]
    assert len(grew) == 1 and grew[0].endswith("pos_embed.weight")  # the grid alone
    spec = before.spec("aloha")
    obs = Observation(camera_images(spec, 3), np.zeros(14), "fold the towel", "aloha")
    with torch.no_grad():
        a, b = before.features(obs)[0], after.features(obs)[0]
    assert a.shape == b.shape  # the same tokens: its frames were not enlarged
    moved = (a - b).abs().mean().item()
    # against a model whose larger grid was drawn anew instead of resampled
    fresh = with_more_pixels(_with_a_strong_grid(tiny_checkpoint), 256 * 320)
    with torch.no_grad():
        fresh.backbone.model.state_dict()[grew[0]].normal_()
        far = (fresh.features(obs)[0] - a).abs().mean().item()
    assert moved < 1e-4 * far, (moved, far)
    with pytest.raises(ConfigError, match="below the checkpoint's"):
        with_more_pixels(before, old // 2)
    assert with_more_pixels(before, old) is before
