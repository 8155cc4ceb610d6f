"""Checkpoint loading with errors that name the file, the tensor and both shapes.

Layout (see docs/checkpoint.md)::

    qwen_vla.json          format_version, policy config (decoder shape, flow steps, ...)
    backbone/              transformers save_pretrained: config, weights, tokenizer, processor
    decoder.safetensors    DiT action decoder weights
    norm_stats.json        {embodiment: {state|action: {mean, std}}}
    embodiments/NAME.yaml  the embodiment descriptions the policy was trained for
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qwen_vla_ros.embodiment.spec import EmbodimentSpec
from qwen_vla_ros.errors import CheckpointError, ConfigError
from qwen_vla_ros.model.backbone import VLMBackbone
from qwen_vla_ros.model.dit import ActionDecoder
from qwen_vla_ros.model.normalize import NormStats
from qwen_vla_ros.model.policy import (
    BACKBONE_DIR,
    CONFIG_FILE,
    DECODER_FILE,
    DTYPES,
    EMBODIMENTS_DIR,
    FORMAT_VERSION,
    STATS_FILE,
    PolicyConfig,
    QwenVLAPolicy,
)


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"dtype '{dtype}' not one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def read_meta(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not path.exists():
        raise CheckpointError(f"{directory} is not a qwen_vla checkpoint: no {CONFIG_FILE}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON: {exc}") from exc
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version!r}, this code reads "
                              f"{FORMAT_VERSION}")
    for key in ("policy", "embodiments"):
        if key not in meta:
            raise CheckpointError(f"{path}: missing '{key}'")
    return meta


def load_decoder_state(decoder: ActionDecoder, path: Path) -> None:
    """Load weights, naming every missing, unexpected or mis-shaped tensor."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        raise CheckpointError(f"checkpoint is missing {path.name}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name} is corrupt or truncated: {exc}") from exc
    expected = decoder.state_dict()
    problems = []
    for name, tensor in expected.items():
        if name not in tensors:
            problems.append(f"missing tensor '{name}' (shape {list(tensor.shape)})")
        elif tuple(tensors[name].shape) != tuple(tensor.shape):
            problems.append(f"tensor '{name}' has shape {list(tensors[name].shape)} in the "
                            f"file but the model built from {CONFIG_FILE} expects "
                            f"{list(tensor.shape)}")
    problems += [f"unexpected tensor '{name}'" for name in sorted(set(tensors) - set(expected))]
    if problems:
        raise CheckpointError(f"{path.name}: " + "; ".join(problems))
    bad = [n for n, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path.name}: non-finite values in {bad[:5]}")
    decoder.load_state_dict(tensors, strict=True)


def load_policy(directory: str | Path, device: str | torch.device = "cpu",
                dtype: str | torch.dtype = "float32") -> QwenVLAPolicy:
    directory = Path(directory)
    meta = read_meta(directory)
    torch_dtype = _dtype(dtype)
    try:
        config = PolicyConfig.from_dict(meta["policy"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from exc
    embodiments = {}
    for name in meta["embodiments"]:
        path = directory / EMBODIMENTS_DIR / f"{name}.yaml"
        if not path.exists():
            raise CheckpointError(f"checkpoint lists embodiment '{name}' but has no {path}")
        embodiments[name] = EmbodimentSpec.from_yaml(path)
    stats_path = directory / STATS_FILE
    if not stats_path.exists():
        raise CheckpointError(f"checkpoint is missing {STATS_FILE}")
    stats = NormStats.load(stats_path)
    try:  # transformers' / tokenizers' own errors, named as this checkpoint's
        backbone = VLMBackbone.from_pretrained(directory / BACKBONE_DIR, config.backbone_layers,
                                               dtype=torch_dtype)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{directory / BACKBONE_DIR}: cannot load the backbone: "
                              f"{first}") from exc
    decoder = ActionDecoder(config.decoder)
    load_decoder_state(decoder, directory / DECODER_FILE)
    policy = QwenVLAPolicy(backbone, decoder, config, embodiments, stats)
    trained = meta.get("trained_embodiments")
    policy.trained_embodiments = None if trained is None else [str(n) for n in trained]
    return policy.to(device=device, dtype=torch_dtype).eval()
