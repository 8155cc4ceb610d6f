"""Vision-language backbone: real transformers Qwen classes, offline.

The backbone turns (camera images, embodiment prompt, instruction) into a sequence of hidden
states that the action decoder cross-attends to. It is a thin wrapper over
``transformers`` ``Qwen3_5Model`` (or ``Qwen3VLModel`` / ``Qwen2_5_VLModel``: same inputs),
the real Qwen image processor, and a tokenizer. Nothing is fetched from a hub.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qwen_vla_ros.errors import CheckpointError, ConfigError
from qwen_vla_ros.model.preprocess import TorchImageProcessor

_log = logging.getLogger(__name__)

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
)
SUPPORTED_MODEL_TYPES = ("qwen3_5", "qwen3_vl", "qwen2_5_vl")

# Qwen's pre-tokenizer pattern (letters, numbers one at a time, punctuation runs, whitespace).
_QWEN_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+"
    r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# A fixed corpus so the tiny tokenizer is the same on every machine.
_TOKENIZER_CORPUS = (
    "pick up the red cube and hand it to the other arm",
    "transfer the cube from the right gripper to the left gripper",
    "insert the peg into the socket",
    "open the drawer and put the sponge inside",
    "walk forward past the sofa and stop at the kitchen door",
    "turn left at the blue chair then go straight to the green box",
    "Embodiment: ALOHA bimanual, two 6-DoF ViperX 300 arms with parallel grippers",
    "Action: absolute joint positions in radians plus normalised gripper opening, 50 Hz.",
    "wheeled mobile base with a forward camera waypoints x y yaw stop flag metres",
    "single arm joint trajectory controller camera wrist high low left right front",
    "Instruction: Camera: cam_high cam_low cam_left_wrist cam_right_wrist 0123456789",
)


def train_tiny_tokenizer(vocab_size: int = 512):
    """Train a small byte-level BPE with Qwen's pre-tokenizer and wrap it as Qwen3_5Tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen3_5Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN_PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(_TOKENIZER_CORPUS) * 4, trainer=trainer)
    vocab = tok.get_vocab()
    state = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen3_5Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    return tokenizer


def special_token_ids(tokenizer) -> dict[str, int]:
    ids = {}
    for name, tok in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                      ("vision_start_token_id", "<|vision_start|>"),
                      ("vision_end_token_id", "<|vision_end|>")):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid is None or (tid == tokenizer.unk_token_id and tok != tokenizer.unk_token):
            raise ConfigError(f"tokenizer has no special token {tok}")
        ids[name] = int(tid)
    return ids


MIN_PIXELS = 56 * 56  # Qwen2-VL's default min_pixels


def make_image_processor(image_pixels: int, patch_size: int = 16, merge_size: int = 2,
                         temporal_patch_size: int = 2):
    """The real Qwen2-VL/Qwen3-VL PIL image processor: at most ``image_pixels`` per image
    (sizes a multiple of patch x merge). Its settings are what ``TorchImageProcessor`` does."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=patch_size, merge_size=merge_size, temporal_patch_size=temporal_patch_size,
        size={"shortest_edge": min(MIN_PIXELS, image_pixels), "longest_edge": image_pixels},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )


def model_class(model_type: str):
    import transformers

    names = {"qwen3_5": "Qwen3_5Model", "qwen3_vl": "Qwen3VLModel",
             "qwen2_5_vl": "Qwen2_5_VLModel"}
    if model_type not in names:
        raise ConfigError(
            f"backbone model_type '{model_type}' is not supported; use one of "
            f"{SUPPORTED_MODEL_TYPES}")
    return getattr(transformers, names[model_type])


@functools.cache
def gpu_only_kernels() -> str:
    """Why Qwen3.5's linear-attention layers would fail on CPU tensors in this environment, or
    "". Once flash-linear-attention imports (with Triton), transformers binds its gated-delta
    rule to fla's Triton kernels for every device, and those refuse CPU tensors ("Pointer
    argument cannot be accessed from Triton (cpu tensor?)", seen on an H200 machine)."""
    if importlib.util.find_spec("fla") is None:
        return ""
    try:
        importlib.import_module("fla.ops.gated_delta_rule")
    except Exception:  # no Triton or a broken install: transformers falls back to torch
        return ""
    return ("flash-linear-attention is installed, and transformers then runs Qwen3.5's "
            "linear attention in its GPU-only Triton kernels; use a CUDA device, or uninstall "
            "flash-linear-attention for CPU runs")


def _has_linear_attention(model: nn.Module) -> bool:
    cfg = getattr(model.config, "text_config", model.config)
    return "linear_attention" in (getattr(cfg, "layer_types", None) or ())


class VLMBackbone(nn.Module):
    """Images + prompt -> conditioning tokens (hidden states of the first ``num_layers`` layers).

    ``num_layers``: how many language-model layers run (None = all). The conditioning is the
    output of the last layer run, after the model's final norm. Fewer layers = faster chunks.
    """

    def __init__(self, model: nn.Module, tokenizer, image_processor,
                 num_layers: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_type = model.config.model_type
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"backbone model_type '{self.model_type}' is not supported")
        self.ids = special_token_ids(tokenizer)
        for key, value in self.ids.items():
            cfg_value = getattr(model.config, key, None)
            if cfg_value is not None and int(cfg_value) != value:
                raise ConfigError(
                    f"backbone config {key}={cfg_value} but the tokenizer maps it to {value}")
        self.num_layers = self._truncate(num_layers)
        self.pixels = TorchImageProcessor(image_processor)
        patch_embed_as_matmul(model)
        self._accepts_mm_types = "mm_token_type_ids" in inspect.signature(
            model.forward).parameters
        # Per layout (cameras, resolutions, prompt, instruction), computed once: the prompt's
        # tokens and the multimodal rope positions (whose computation walks the tokens on the
        # host). ``layouts`` counts the layouts planned; a new one is planned, not an error.
        self.layout_cache = True  # False: as transformers does it, every call (bench)
        self.compile_error = ""
        self._log = print
        self._compiled_lm = None  # the language model's compiled forward, once compiled
        self._tokens: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._positions: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.layouts = 0

    # ---- construction -------------------------------------------------------------------
    @property
    def text_config(self):
        return getattr(self.model.config, "text_config", self.model.config)

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    def _truncate(self, num_layers: int | None) -> int:
        layers = self.model.language_model.layers
        total = len(layers)
        if num_layers is None or num_layers == total:
            return total
        if not 1 <= num_layers <= total:
            raise ConfigError(f"backbone num_layers={num_layers} outside 1..{total}")
        self.model.language_model.layers = nn.ModuleList(list(layers)[:num_layers])
        cfg = self.text_config
        cfg.num_hidden_layers = num_layers
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = list(cfg.layer_types)[:num_layers]
        return num_layers

    @classmethod
    def from_config(cls, model_config, tokenizer, image_processor,
                    num_layers: int | None = None) -> VLMBackbone:
        model_cls = model_class(model_config.model_type)
        model = model_cls(model_config)
        return cls(model, tokenizer, image_processor, num_layers)

    @classmethod
    def from_pretrained(cls, directory: str | Path, num_layers: int | None = None,
                        dtype: torch.dtype = torch.float32) -> VLMBackbone:
        from transformers import AutoConfig, AutoTokenizer, Qwen2VLImageProcessorPil

        directory = Path(directory)
        if not (directory / "config.json").exists():
            raise CheckpointError(f"backbone directory {directory} has no config.json")
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        model_cls = model_class(config.model_type)
        try:
            model = model_cls.from_pretrained(directory, local_files_only=True, dtype=dtype,
                                                attn_implementation="sdpa")
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"backbone weights in {directory} could not be loaded: {exc}"
                                  ) from exc
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(directory,
                                                                   local_files_only=True)
        return cls(model, tokenizer, image_processor, num_layers)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        # Save the full-depth layer count only if nothing was truncated: a truncated
        # backbone is saved as what it is (a shorter model), which reloads identically.
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)

    # ---- inputs -------------------------------------------------------------------------
    def build_prompt(self, prompt: str, instruction: str, camera_names: Sequence[str],
                     tokens_per_image: Sequence[int], instruction_first: bool = False) -> str:
        """The chat text: the embodiment prompt, the cameras' image tokens and the
        instruction, after the images or (``instruction_first``) before them. Every layer is
        causal: only tokens after the instruction can read it, so with the instruction last
        the image tokens' hidden states cannot depend on it."""
        words = ["Instruction: ", instruction.strip(), "\n"]
        parts = ["<|im_start|>user\n", prompt.strip(), "\n"] + (words if instruction_first
                                                                 else [])
        for name, n in zip(camera_names, tokens_per_image, strict=True):
            parts += [f"{name}: <|vision_start|>", "<|image_pad|>" * int(n), "<|vision_end|>\n"]
        if not instruction_first:
            parts += words[:2]
        parts += ["<|im_end|>\n<|im_start|>assistant\n"]
        return "".join(parts)

    def prepare(self, images: Mapping[str, np.ndarray], camera_order: Sequence[str], prompt: str,
                instruction: str, instruction_first: bool = False) -> dict[str, torch.Tensor]:
        """Model inputs for one observation (batch of 1). Images are HxWx3 uint8 RGB."""
        return self.prepare_batch([(images, camera_order, prompt, instruction)],
                                  instruction_first)

    def prepare_batch(self, items: Sequence[tuple[Mapping[str, np.ndarray], Sequence[str], str,
                                                  str]],
                      instruction_first: bool = False) -> dict[str, torch.Tensor]:
        """Model inputs for a batch of observations, each (images, camera order, prompt,
        instruction); ``instruction_first``: see ``build_prompt``. Prompts of different
        lengths are padded on the right: every layer is causal, so a padded sample's hidden
        states equal its unpadded ones (tested)."""
        frames, texts = [], []
        for images, camera_order, prompt, instruction in items:
            missing = [c for c in camera_order if c not in images]
            if missing:
                raise KeyError(f"missing camera image(s) {missing}; have {sorted(images)}")
            counts = []
            for cam in camera_order:
                img = images[cam]
                if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                    raise ValueError(f"camera '{cam}': expected HxWx3 uint8, got {img.shape} "
                                     f"{img.dtype}")
                frames.append(img)
                counts.append(self.pixels.tokens_per_image(img.shape[0], img.shape[1]))
            texts.append(self.build_prompt(prompt, instruction, camera_order, counts,
                                           instruction_first))
        device = next(self.model.parameters()).device
        vision = self.pixels(frames, device=device)
        enc = self._tokenize(texts)
        input_ids = enc["input_ids"]
        inputs = {
            "input_ids": input_ids,
            "attention_mask": enc["attention_mask"],
            "pixel_values": vision["pixel_values"],
            "image_grid_thw": vision["image_grid_thw"],
        }
        if self._accepts_mm_types:
            inputs["mm_token_type_ids"] = (input_ids == self.ids["image_token_id"]).to(torch.int32)
        return inputs

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The tokenizer's output; one text in inference mode (the live policy's case) is
        tokenised once (inference tensors: never reused where autograd could see them)."""
        if len(texts) != 1 or not torch.is_inference_mode_enabled() or not self.layout_cache:
            return self.tokenizer(texts, return_tensors="pt", padding=True,
                                  padding_side="right")
        enc = self._tokens.get(texts[0])
        if enc is None:
            enc = dict(self.tokenizer(texts, return_tensors="pt"))
            _remember(self._tokens, texts[0], enc)
        return dict(enc)

    # ---- forward ------------------------------------------------------------------------
    def forward(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (hidden [B, L, C], mask [B, L] bool)."""
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        moved = {k: (v.to(device=device, dtype=dtype) if k == "pixel_values" else v.to(device))
                 for k, v in inputs.items()}
        positions = self._layout_positions(inputs, moved)
        if positions is not None:
            moved["position_ids"] = positions
        if device.type == "cpu" and _has_linear_attention(self.model) and gpu_only_kernels():
            raise ConfigError(f"this policy cannot run on the CPU here: {gpu_only_kernels()}")
        try:
            out = self.model(**moved, use_cache=False)
        except Exception as exc:
            if not self._eager_fallback(exc):
                raise
            out = self.model(**moved, use_cache=False)
        return out.last_hidden_state, moved["attention_mask"].bool()

    def compile_language_model(self, mode: str | None = None, backend: str = "inductor",
                               log=print) -> bool:
        """Compile the language model in place (``nn.Module.compile``: weights and their
        names unchanged); False where the model has none apart."""
        lm = getattr(self.model, "language_model", None)
        if lm is None:
            return False
        lm.compile(mode=mode, backend=backend, dynamic=False)
        self._compiled_lm = lm._compiled_call_impl
        self._log = log
        self.compile_error = ""
        return True

    def use_compiled(self, on: bool) -> None:
        """Switch the language model between its compiled and eager forward."""
        lm = getattr(self.model, "language_model", None)
        if lm is not None and self._compiled_lm is not None:
            lm._compiled_call_impl = self._compiled_lm if on else None

    def _eager_fallback(self, exc: Exception) -> bool:
        """After a failure with a compiled language model: uncompile it, say why, and let the
        caller run eager. False when nothing was compiled (the error is the model's)."""
        lm = getattr(self.model, "language_model", None)
        if lm is None or getattr(lm, "_compiled_call_impl", None) is None:
            return False
        lm._compiled_call_impl = self._compiled_lm = None
        self.compile_error = f"language model: {type(exc).__name__}: {exc}"
        self._log(f"compiled language model failed, running eager from now on: "
                  f"{self.compile_error}")
        return True

    def _layout_positions(self, inputs: Mapping[str, torch.Tensor],
                          moved: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The rope position ids of a single observation's layout in inference mode, computed
        by the model's own ``compute_3d_position_ids`` the first time the layout (its tokens
        and image grids, both on the host) is seen, then reused: no host walk of the tokens
        per chunk."""
        compute = getattr(self.model, "compute_3d_position_ids", None)
        ids = inputs["input_ids"]
        if compute is None or ids.shape[0] != 1 or ids.device.type != "cpu" \
                or not torch.is_inference_mode_enabled() or not self.layout_cache:
            return None
        grid = inputs.get("image_grid_thw")
        key = ids.numpy().tobytes() + b"|" + (b"" if grid is None else
                                              grid.cpu().numpy().tobytes())
        positions = self._positions.get(key)
        if positions is None:
            wanted = inspect.signature(compute).parameters
            args = {k: v for k, v in moved.items() if k in wanted and k != "pixel_values"}
            positions = compute(**{**args, "inputs_embeds": None}) if "inputs_embeds" in \
                wanted else compute(**args)
            if positions is None:
                return None
            self.model.rope_deltas = None  # computed for this call only, as forward would
            _remember(self._positions, key, positions)
            self.layouts += 1
            grids = [] if grid is None else grid.tolist()
            _log.info(f"camera layout {self.layouts}: {ids.shape[1]} tokens, image grids "
                      f"{grids} (t, h, w patches); planned once, reused for every chunk")
        return positions


def _remember(cache: OrderedDict, key, value, size: int = 8) -> None:
    """Keep ``value`` under ``key``, dropping the oldest entry beyond ``size``."""
    cache[key] = value
    while len(cache) > size:
        cache.popitem(last=False)


def patch_embed_as_matmul(model: nn.Module) -> bool:
    """Run the vision tower's patch embedding as the matrix product it is.

    Qwen's patch embedding is a Conv3d whose kernel equals its stride, applied to inputs of
    exactly one kernel each: one output per input, a linear map of the flattened patch. oneDNN's
    Conv3d is ~8x slower than the product on CPU (forward + backward, 6144 patches of 1536 to
    32). Same parameters and state dict; ``test_policy.py`` checks equal outputs and gradients.
    Returns whether the embedding was found and replaced.
    """
    embed = getattr(getattr(model, "visual", None), "patch_embed", None)
    conv = getattr(embed, "proj", None)
    if not isinstance(conv, nn.Conv3d) or tuple(conv.kernel_size) != tuple(conv.stride) or any(
            conv.padding) or conv.groups != 1:
        return False
    # The instance becomes a subclass whose forward is the product: no per-instance method
    # (which would make a reference cycle), copies keep it, the state dict is unchanged.
    base = type(embed)
    if not getattr(base, "_matmul_patch_embed", False):
        if base not in _MATMUL_EMBEDS:
            _MATMUL_EMBEDS[base] = type(f"{base.__name__}AsMatmul", (base,), {
                "forward": _patch_embed_matmul, "_matmul_patch_embed": True})
        embed.__class__ = _MATMUL_EMBEDS[base]
    return True


_MATMUL_EMBEDS: dict[type, type] = {}


def _patch_embed_matmul(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    weight = self.proj.weight.reshape(self.proj.out_channels, -1)
    x = hidden_states.reshape(-1, weight.shape[1]).to(dtype=weight.dtype)
    return torch.nn.functional.linear(x, weight, self.proj.bias)


def tiny_backbone_config(tokenizer, hidden_size: int = 64, num_layers: int = 2,
                         vision_depth: int = 2, image_pixels: int = 224 * 224,
                         vision_hidden: int = 32):
    """A small random-init Qwen3.5 config: real architecture, seconds to build."""
    from transformers import Qwen3_5Config

    ids = special_token_ids(tokenizer)
    layer_types = (["linear_attention", "full_attention"] * num_layers)[:num_layers]
    if "full_attention" not in layer_types:
        layer_types[-1] = "full_attention"
    head_dim = 16
    side = max(4, round((image_pixels ** 0.5) / 16))
    text = {
        "vocab_size": len(tokenizer), "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2, "num_hidden_layers": num_layers,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": head_dim,
        "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 16,
        "linear_value_head_dim": 16, "layer_types": layer_types,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                            "partial_rotary_factor": 0.5, "mrope_section": [2, 1, 1],
                            "mrope_interleaved": True},
        "max_position_embeddings": 4096,
    }
    vision = {
        "depth": vision_depth, "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden, "num_heads": max(2, vision_hidden // 16),
        "out_hidden_size": hidden_size, "patch_size": 16, "spatial_merge_size": 2,
        "temporal_patch_size": 2, "num_position_embeddings": side * side,
    }
    return Qwen3_5Config(text_config=text, vision_config=vision, **ids)


def qwen3_5_4b_config(tokenizer):
    """A Qwen3.5-4B-shaped config (random init): for GPU latency and memory figures only.

    Shape as published for Qwen3.5-4B: 32 layers (3 gated-delta-net : 1 full attention),
    hidden 2560, MLP 9216, 16 query / 4 KV heads of 256, 248,320-token vocabulary, 24-layer
    1024-wide vision tower. Verify against the real config.json before quoting it as 4B.
    """
    from transformers import Qwen3_5Config

    ids = special_token_ids(tokenizer)
    text = {
        "vocab_size": 248320, "hidden_size": 2560, "intermediate_size": 9216,
        "num_hidden_layers": 32, "num_attention_heads": 16, "num_key_value_heads": 4,
        "head_dim": 256, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
        "linear_key_head_dim": 128, "linear_value_head_dim": 128, "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0,
                            "partial_rotary_factor": 0.25, "mrope_section": [11, 11, 10],
                            "mrope_interleaved": True},
        "max_position_embeddings": 262144,
    }
    vision = {
        "depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
        "out_hidden_size": 2560, "patch_size": 16, "spatial_merge_size": 2,
        "temporal_patch_size": 2, "num_position_embeddings": 2304,
    }
    return Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def describe(model: nn.Module) -> dict[str, Any]:
    return {"parameters": sum(p.numel() for p in model.parameters())}
