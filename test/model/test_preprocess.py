"""Image preprocessing in torch against the real Qwen image processor, and the patch embedding
run as a matrix product against the Conv3d it replaces."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.model.backbone import make_image_processor, patch_embed_as_matmul
from qwen_vla_ros.model.preprocess import (
    TorchImageProcessor,
    capped_rule,
    fit_frame,
    resize_frames,
)


@pytest.fixture(scope="module")
def sim_frames() -> list[np.ndarray]:
    """Frames of the real MuJoCo ALOHA scene, as the sim node publishes them."""
    from qwen_vla_ros.sim.aloha import AlohaSim

    sim = AlohaSim("transfer_cube", image_size=(240, 320))
    sim.reset(3)
    return [sim.render(cam) for cam in ("top", "angle", "left_wrist")]


def _in_255ths(a: torch.Tensor, b: torch.Tensor, std: float = 0.5) -> np.ndarray:
    return ((a - b).abs() * 255 * std).numpy()


@pytest.mark.parametrize("pixels", [224 * 224, 128 * 192, 480 * 640])
def test_torch_preprocessing_matches_the_qwen_processor_on_camera_frames(sim_frames, pixels):
    processor = make_image_processor(pixels)
    ref = processor(images=sim_frames, return_tensors="pt")
    ours = TorchImageProcessor(processor)(sim_frames)
    assert ours["image_grid_thw"].tolist() == ref["image_grid_thw"].tolist()
    assert ours["pixel_values"].shape == ref["pixel_values"].shape
    diff = _in_255ths(ours["pixel_values"], ref["pixel_values"])
    print(f"{pixels}: mean {diff.mean():.4f}/255, p99.9 {np.quantile(diff, 0.999):.2f}/255, "
          f"max {diff.max():.1f}/255")
    # The documented tolerance (model/preprocess.py): mean < 0.1/255, 99.9 % within 4/255.
    assert diff.mean() < 0.1
    assert np.quantile(diff, 0.999) <= 4.0 + 1e-3
    assert diff.max() <= 16


def test_random_noise_stays_within_the_worst_case_bound():
    processor = make_image_processor(224 * 224)
    noise = [np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)]
    diff = _in_255ths(TorchImageProcessor(processor)(noise)["pixel_values"],
                      processor(images=noise, return_tensors="pt")["pixel_values"])
    assert diff.max() <= 16 and diff.mean() < 0.5


def test_frames_resized_for_a_cache_are_left_alone(sim_frames):
    """Training reads frames resized once (resize_frames); the processor must then give what
    it gives for the recorded frame, bit for bit."""
    pixels = TorchImageProcessor(make_image_processor(224 * 224))
    raw = np.stack(sim_frames)
    small = resize_frames(raw, pixels.resize_rule)
    assert small.shape[1:3] == pixels.resized_size(240, 320) != (240, 320)
    torch.testing.assert_close(pixels(list(small))["pixel_values"],
                               pixels(list(raw))["pixel_values"], rtol=0, atol=0)


def test_a_body_capped_below_the_model_is_resized_once(sim_frames):
    """An embodiment's own image_pixels (capped_rule): its frames are resized to the capped
    size (fit_frame), as a cache of them is (resize_frames), and the model's processor then
    leaves them alone: what it sees is what the capped processor would give, bit for bit."""
    model = TorchImageProcessor(make_image_processor(256 * 320))
    capped = TorchImageProcessor(make_image_processor(128 * 160))
    rule = capped_rule(model.resize_rule, 128 * 160)
    assert rule == capped.resize_rule
    frame = sim_frames[0]
    small = fit_frame(frame, rule)
    assert small.shape[:2] == capped.resized_size(240, 320) != model.resized_size(240, 320)
    assert fit_frame(small, rule) is small  # already the size: not resized again
    np.testing.assert_array_equal(small, resize_frames(frame[None], rule)[0])
    seen, want = model([small]), capped([frame])
    assert seen["image_grid_thw"].tolist() == want["image_grid_thw"].tolist()
    torch.testing.assert_close(seen["pixel_values"], want["pixel_values"], rtol=0, atol=0)
    assert model.tokens_per_image(*small.shape[:2]) < model.tokens_per_image(240, 320)
    assert capped_rule(model.resize_rule, None) == model.resize_rule
    assert capped_rule(model.resize_rule, 10 ** 7) == model.resize_rule  # no cap above it
    with pytest.raises(ConfigError, match="below the model's smallest frame"):
        capped_rule(model.resize_rule, 1024)


def test_mixed_sizes_keep_their_order():
    pixels = TorchImageProcessor(make_image_processor(224 * 224))
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, s, dtype=np.uint8) for s in ((240, 320, 3), (480, 640, 3)))
    both = pixels([a, b, a])
    each = [pixels([x]) for x in (a, b, a)]
    torch.testing.assert_close(both["pixel_values"], torch.cat([e["pixel_values"] for e in each]))
    assert both["image_grid_thw"].tolist() == [e["image_grid_thw"][0].tolist() for e in each]


def test_bad_images_are_refused():
    pixels = TorchImageProcessor(make_image_processor(224 * 224))
    with pytest.raises(ValueError, match="uint8"):
        pixels([np.zeros((64, 64, 3), np.float32)])
    with pytest.raises(ValueError, match="HxWx3"):
        pixels([np.zeros((64, 64), np.uint8)])


def test_patch_embedding_as_matmul_equals_the_conv3d(tiny_policy):
    model = copy.deepcopy(tiny_policy.backbone.model)
    reference = copy.deepcopy(model)
    embed = reference.visual.patch_embed
    embed.__class__ = type(embed).__mro__[1]  # back to transformers' class: its Conv3d forward
    assert type(embed).__module__.startswith("transformers.")
    assert patch_embed_as_matmul(model)
    conv = reference.visual.patch_embed.proj
    x = torch.randn(40, conv.in_channels * int(np.prod(conv.kernel_size)))
    outs, grads = [], []
    for m in (model, reference):
        m.zero_grad()
        y = m.visual.patch_embed(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append(y.detach())
        grads.append(m.visual.patch_embed.proj.weight.grad.clone())
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)
    # The replacement follows a copy to the copy's own weights.
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.visual.patch_embed.proj.weight.add_(1.0)
    assert (twin.visual.patch_embed(x) - model.visual.patch_embed(x)).abs().max() > 1e-3
