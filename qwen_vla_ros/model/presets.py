"""Model presets.

- ``tiny``: the real architecture at toy size; builds offline in seconds (tokenizer trained on
  the fly, real Qwen image processor). For tests, CI, the sim demo and replay.
- ``full``: Qwen3.5-4B-shaped backbone + ~1.15B-parameter DiT, random init. For GPU latency
  and memory figures; no weights exist to load into it here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from qwen_vla_ros.embodiment.spec import EmbodimentSpec, available_embodiments, load_embodiment
from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.model.backbone import (
    VLMBackbone,
    make_image_processor,
    model_class,
    qwen3_5_4b_config,
    tiny_backbone_config,
    train_tiny_tokenizer,
)
from qwen_vla_ros.model.dit import ActionDecoder, DecoderConfig
from qwen_vla_ros.model.normalize import NormStats
from qwen_vla_ros.model.policy import PolicyConfig, QwenVLAPolicy

PRESETS = ("tiny", "full")
# 240x320 camera frames -> 128x160 (20 tokens per camera). The tiny preset was 224x224 pixels
# (192x256), a 32-wide vision tower and a 64-wide language model until a 7-minute comparison
# on the same 50 demonstrations (docs/benchmarks.md, "tiny preset shape"): this shape reached
# a lower validation loss at every equal step and equal minute.
TINY_IMAGE_PIXELS = 128 * 192


def preset_configs(name: str, tokenizer, image_pixels: int | None = None):
    """(backbone transformers config, PolicyConfig) for a preset; ``image_pixels``: about
    how many pixels each camera frame is resized to (default: the preset's)."""
    if name == "tiny":
        pixels = image_pixels or TINY_IMAGE_PIXELS
        bb = tiny_backbone_config(tokenizer, hidden_size=128, num_layers=2, vision_depth=2,
                                  image_pixels=pixels, vision_hidden=64)
        dec = DecoderConfig(width=128, depth=2, heads=4, context_dim=128, max_horizon=64,
                            time_embed_dim=64)
        return bb, PolicyConfig(decoder=dec, image_pixels=pixels, flow_steps=10,
                                preset="tiny")
    if name == "full":
        bb = qwen3_5_4b_config(tokenizer)
        dec = DecoderConfig(width=1536, depth=18, heads=16, mlp_ratio=4.25, context_dim=2560,
                            max_horizon=64, time_embed_dim=256)
        return bb, PolicyConfig(decoder=dec, image_pixels=image_pixels or 224 * 224,
                                flow_steps=10, preset="full")
    raise ConfigError(f"unknown preset '{name}'; choose one of {PRESETS}")


def build_preset(name: str, embodiments: Sequence[str | EmbodimentSpec] | None = None,
                 seed: int = 0, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, image_pixels: int | None = None,
                 instruction_first: bool = False, prompt_summary: bool = False
                 ) -> QwenVLAPolicy:
    """A random-init policy of the preset's shape, for every embodiment in config/
    (``image_pixels``: per camera frame, default the preset's; ``instruction_first``:
    ``PolicyConfig``'s; ``prompt_summary``: ``DecoderConfig``'s)."""
    specs: dict[str, EmbodimentSpec] = {}
    for e in embodiments if embodiments is not None else available_embodiments():
        spec = e if isinstance(e, EmbodimentSpec) else load_embodiment(e)
        specs[spec.name] = spec
    tokenizer = train_tiny_tokenizer()
    bb_cfg, pol_cfg = preset_configs(name, tokenizer, image_pixels)
    pol_cfg = dataclasses.replace(
        pol_cfg, instruction_first=instruction_first,
        decoder=dataclasses.replace(pol_cfg.decoder, prompt_summary=prompt_summary))
    processor = make_image_processor(pol_cfg.image_pixels)
    torch.manual_seed(seed)
    with torch.device(device):
        backbone = VLMBackbone.from_config(bb_cfg, tokenizer, processor, pol_cfg.backbone_layers)
        decoder = ActionDecoder(pol_cfg.decoder)
    policy = QwenVLAPolicy(backbone, decoder, pol_cfg, specs, NormStats.from_limits(specs))
    return policy.to(dtype=dtype).eval()


def image_resize_rule(name: str, image_pixels: int | None = None) -> tuple[int, int, int]:
    """The preset's image resize rule (factor, min and max pixels), from its configuration
    alone (no weights built): what training frames are resized by."""
    from qwen_vla_ros.model.preprocess import TorchImageProcessor

    _, pol_cfg = preset_configs(name, train_tiny_tokenizer(), image_pixels)
    return TorchImageProcessor(make_image_processor(pol_cfg.image_pixels)).resize_rule


def count_parameters(name: str) -> dict[str, int]:
    """Parameter counts of a preset, built on the meta device (no memory, no time)."""
    tokenizer = train_tiny_tokenizer()
    bb_cfg, pol_cfg = preset_configs(name, tokenizer)
    with torch.device("meta"):
        model = model_class(bb_cfg.model_type)(bb_cfg)
        decoder = ActionDecoder(pol_cfg.decoder)
    return {"backbone": sum(p.numel() for p in model.parameters()),
            "decoder": sum(p.numel() for p in decoder.parameters())}


def with_more_pixels(policy: QwenVLAPolicy, image_pixels: int) -> QwenVLAPolicy:
    """``policy`` (a trained checkpoint) as a model that takes frames of up to
    ``image_pixels``: for a new body whose cameras need more detail than the bodies it was
    trained on (train --init --image-pixels). Every weight is kept; the vision tower's
    learned position grid (a side x side table the tower resamples bilinearly, corners
    aligned, to each frame's patch grid) is refined to a side of k * (side - 1) + 1, at
    least the preset's side for the new frame size: the old nodes stay nodes and the new ones
    lie on the old table's bilinear surface, so resampling the refined table gives every
    frame the positions the old one gave it. Each body the checkpoint knows keeps its old
    frame size (its ``image_pixels``): what it was trained on reads as before."""
    old = policy.config.image_pixels
    if image_pixels < old:
        raise ConfigError(f"image_pixels {image_pixels} is below the checkpoint's {old}; a "
                          "body's frames are made smaller with image_pixels_of")
    if image_pixels == old:
        return policy
    specs = [s if s.image_pixels is not None else s.with_image_pixels(old)
             for s in policy.embodiments.values()]
    bb_cfg, _ = preset_configs(policy.config.preset, policy.backbone.tokenizer, image_pixels)
    vision = bb_cfg.vision_config
    side = round(policy.backbone.model.config.vision_config.num_position_embeddings ** 0.5)
    wanted = round(vision.num_position_embeddings ** 0.5)
    if wanted > side:
        k = -(-(wanted - 1) // (side - 1))  # ceil
        vision.num_position_embeddings = (k * (side - 1) + 1) ** 2
    processor = make_image_processor(image_pixels)
    with torch.device(policy.device):
        backbone = VLMBackbone.from_config(bb_cfg, policy.backbone.tokenizer, processor,
                                           policy.backbone.num_layers)
    source = policy.backbone.model.state_dict()
    target = backbone.model.state_dict()
    if set(source) != set(target):
        raise ConfigError("the checkpoint's backbone is not its preset's: cannot rebuild it")
    for key, value in source.items():
        if value.shape != target[key].shape:
            if not key.endswith("pos_embed.weight"):
                raise ConfigError(f"backbone weight {key}: {tuple(value.shape)} in the "
                                  f"checkpoint, {tuple(target[key].shape)} at {image_pixels} "
                                  "pixels")
            value = resize_position_grid(value, target[key].shape[0])
        target[key].copy_(value)
    decoder = policy.decoder  # the same module: its weights do not depend on frame size
    config = dataclasses.replace(policy.config, image_pixels=image_pixels)
    new = QwenVLAPolicy(backbone, decoder, config, {s.name: s for s in specs},
                        policy.norm_stats)
    new.trained_embodiments = policy.trained_embodiments
    return new.to(dtype=policy.dtype).eval()


def resize_position_grid(table: torch.Tensor, positions: int) -> torch.Tensor:
    """A square [side*side, C] learned position table resampled to ``positions`` (a square)."""
    side, new_side = round(table.shape[0] ** 0.5), round(positions ** 0.5)
    if side * side != table.shape[0] or new_side * new_side != positions:
        raise ConfigError(f"position tables must be square grids: {table.shape[0]} -> "
                          f"{positions}")
    grid = table.T.reshape(1, table.shape[1], side, side)
    grid = torch.nn.functional.interpolate(grid.float(), size=(new_side, new_side),
                                           mode="bilinear", align_corners=True)
    return grid.reshape(table.shape[1], positions).T.to(table.dtype)
