"""Model presets.

- ``tiny``: the real architecture at toy size; builds offline in seconds (tokenizer trained on
  the fly, real Qwen image processor). For tests, CI, the sim demo and replay.
- ``full``: Qwen3.5-4B-shaped backbone + ~1.15B-parameter DiT, random init. For GPU latency
  and memory figures; no weights exist to load into it here.
"""

from __future__ import annotations

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
                 dtype: torch.dtype = torch.float32, image_pixels: int | None = None
                 ) -> QwenVLAPolicy:
    """A random-init policy of the preset's shape, for every embodiment in config/
    (``image_pixels``: per camera frame, default the preset's)."""
    specs: dict[str, EmbodimentSpec] = {}
    for e in embodiments if embodiments is not None else available_embodiments():
        spec = e if isinstance(e, EmbodimentSpec) else load_embodiment(e)
        specs[spec.name] = spec
    tokenizer = train_tiny_tokenizer()
    bb_cfg, pol_cfg = preset_configs(name, tokenizer, image_pixels)
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
