"""The Qwen-VLA policy: backbone + DiT decoder + per-embodiment normalisation.

Inference API used by the nodes, replay and benchmarks::

    policy = QwenVLAPolicy.from_pretrained(ckpt_dir, device="cuda", dtype="bfloat16")
    chunk = policy.predict(Observation(images={...}, state=q, instruction="...",
                                       embodiment="aloha"), seed=0)
    chunk.actions   # [horizon, action_dim] in the embodiment's units (rad, m, normalised grip)
    chunk.timing_ms # preprocess / backbone / decoder / total

Units: the policy speaks the embodiment's units (``config/embodiments/*.yaml``): radians and
metres, grippers as normalised opening. Mapping to hardware units happens in the adapters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qwen_vla_ros.embodiment.spec import MIN_IMAGE_PIXELS, EmbodimentSpec
from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.model.backbone import VLMBackbone
from qwen_vla_ros.model.dit import ActionDecoder, DecoderConfig
from qwen_vla_ros.model.flow import euler_step, flow_matching_loss, sample_actions, soft_weights
from qwen_vla_ros.model.normalize import NormStats
from qwen_vla_ros.model.preprocess import capped_rule, fit_frame
from qwen_vla_ros.model.types import ActionChunk, Observation  # re-exported

FORMAT_VERSION = 1
CONFIG_FILE = "qwen_vla.json"
DECODER_FILE = "decoder.safetensors"
STATS_FILE = "norm_stats.json"
BACKBONE_DIR = "backbone"
EMBODIMENTS_DIR = "embodiments"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class PolicyConfig:
    decoder: DecoderConfig
    image_pixels: int = 224 * 224  # each camera is resized to about this many pixels
    backbone_layers: int | None = None  # language-model layers run for conditioning
    flow_steps: int = 10
    preset: str = "custom"
    # The instruction before the camera images in the backbone's prompt, so the image tokens
    # (every layer is causal) can be read in its light; False: after them (every checkpoint
    # trained before this option). Fixed for a checkpoint's life: its weights learned one.
    instruction_first: bool = False

    def __post_init__(self) -> None:
        if self.flow_steps < 1:
            raise ConfigError("flow_steps must be >= 1")
        if self.image_pixels < MIN_IMAGE_PIXELS:
            raise ConfigError(f"image_pixels must be >= {MIN_IMAGE_PIXELS}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decoder"] = self.decoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyConfig:
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"{CONFIG_FILE}: unknown policy key(s) {unknown}")
        if "decoder" not in data:
            raise ConfigError(f"{CONFIG_FILE}: missing 'decoder'")
        kwargs = dict(data)
        kwargs["decoder"] = DecoderConfig.from_dict(dict(data["decoder"]))
        return cls(**kwargs)


class QwenVLAPolicy(nn.Module):
    def __init__(self, backbone: VLMBackbone, decoder: ActionDecoder, config: PolicyConfig,
                 embodiments: Mapping[str, EmbodimentSpec], norm_stats: NormStats) -> None:
        super().__init__()
        if decoder.cfg.context_dim != backbone.hidden_size:
            raise ConfigError(f"decoder context_dim {decoder.cfg.context_dim} != backbone "
                              f"hidden size {backbone.hidden_size}")
        self.backbone = backbone
        self.decoder = decoder
        self.config = config
        self.embodiments = dict(embodiments)
        self.norm_stats = norm_stats
        for spec in self.embodiments.values():
            spec.check_width(decoder.cfg.action_width)
            if spec.state_dim and max(spec.state_slots) >= decoder.cfg.state_width:
                raise ConfigError(f"embodiment '{spec.name}': state slots exceed state width")
            if spec.horizon > decoder.cfg.max_horizon:
                raise ConfigError(f"embodiment '{spec.name}': horizon {spec.horizon} > decoder "
                                  f"max_horizon {decoder.cfg.max_horizon}")
            norm_stats.validate(spec)
        # The embodiments training fitted this checkpoint to (None: never trained, e.g. a
        # random-init preset); a node for another embodiment refuses it (require_trained).
        self.trained_embodiments: list[str] | None = None
        self._calls = 0
        self._compiled = None  # the compiled flow step, once compile_for_inference ran
        self._use_compiled = True  # use_compiled(False): eager, the compiled one kept
        self.compile_error = ""  # why the compiled path fell back to eager, if it did
        self._log = print

    # ---- compilation --------------------------------------------------------------------
    def compile_for_inference(self, mode: str | None = None, backend: str = "inductor",
                              backbone: bool = True, log=print) -> None:
        """``torch.compile`` one Euler step of the flow loop (``euler_step``, ``fullgraph``: no
        host synchronisation inside; its times are device tensors, so the one graph serves
        every step count and prefix length, and compile time does not grow with the steps, as
        it did when the unrolled loop was one graph) and, with ``backbone``, the backbone's
        language model
        (its rope positions come from the per-layout cache, so no ``.item()`` remains there;
        the vision tower stays eager). Shapes are static per layout (cameras, token grids,
        prompt), so each layout compiles once. ``mode``: torch.compile's, e.g.
        "reduce-overhead" (CUDA graphs) or "max-autotune-no-cudagraphs". A failure to compile
        or run falls back to eager for good and says why (``compile_error``, ``log``)."""
        self._log = log
        self.compile_error = ""
        self._compiled = torch.compile(euler_step, mode=mode, backend=backend,
                                       fullgraph=True, dynamic=False)
        self._use_compiled = True
        if backbone:
            self.backbone.compile_language_model(mode=mode, backend=backend, log=log)

    def _compiled_step(self, *args) -> torch.Tensor:
        # With CUDA graphs (reduce-overhead) each call of the compiled step may start a new
        # graph generation and reuse its output buffer; the loop feeds each output to the next
        # call, so it takes a copy (one small kernel per step) instead of relying on when
        # cudagraph trees free a prior output.
        return self._compiled(*args).clone()

    @property
    def compiled(self) -> bool:
        return self._compiled is not None and self._use_compiled

    def use_compiled(self, on: bool) -> None:
        """Run the compiled (``on``) or the eager path; both are kept, so a benchmark can
        time them in one run. No effect before ``compile_for_inference``."""
        self._use_compiled = on
        self.backbone.use_compiled(on)

    def _sample(self, *args, **kwargs) -> torch.Tensor:
        if self.compiled:
            try:
                return sample_actions(*args, step=self._compiled_step, **kwargs)
            except Exception as exc:  # any compiler failure: eager, once said
                self.compile_error = f"flow step: {type(exc).__name__}: {exc}"
                self._log(f"compiled flow step failed, running eager from now on: "
                          f"{self.compile_error}")
                self._compiled = None
        return sample_actions(*args, **kwargs)

    # ---- helpers ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    def spec(self, embodiment: str) -> EmbodimentSpec:
        if embodiment not in self.embodiments:
            raise ConfigError(f"unknown embodiment '{embodiment}'; this checkpoint knows "
                              f"{sorted(self.embodiments)}")
        return self.embodiments[embodiment]

    def _masks(self, spec: EmbodimentSpec) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.decoder.cfg
        am = torch.zeros(1, cfg.action_width, device=self.device, dtype=self.dtype)
        am[0, spec.action_slots] = 1
        sm = torch.zeros(1, cfg.state_width, device=self.device, dtype=self.dtype)
        if spec.state_dim:
            sm[0, spec.state_slots] = 1
        return am, sm

    def _to_slots(self, values: np.ndarray, slots: list[int], width: int) -> torch.Tensor:
        out = np.zeros((*values.shape[:-1], width), dtype=np.float32)
        out[..., slots] = values
        return torch.from_numpy(out).to(device=self.device, dtype=self.dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ---- conditioning -------------------------------------------------------------------
    def features(self, obs: Observation | Sequence[Observation]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone hidden states [B, L, C] and mask [B, L] for one observation (B = 1) or a
        batch, in one backbone pass."""
        batch = [obs] if isinstance(obs, Observation) else list(obs)
        items = []
        for o in batch:
            spec = self.spec(o.embodiment)
            images, order = self.camera_inputs(spec, o)
            items.append((images, order, spec.prompt, o.instruction))
        hidden, mask = self.backbone(self.backbone.prepare_batch(
            items, self.config.instruction_first))
        return hidden.to(self.dtype), mask

    def camera_inputs(self, spec: EmbodimentSpec, obs: Observation
                      ) -> tuple[dict[str, np.ndarray], list[str]]:
        """(images by name, order) for the backbone; a body with its own ``image_pixels``
        (below the model's) gets its frames resized to it here, the same way the processor
        resizes (training caches them at that size already: then nothing is done)."""
        images, order = obs.camera_inputs(spec.cameras)
        if spec.image_pixels is not None:
            rule = capped_rule(self.backbone.pixels.resize_rule, spec.image_pixels)
            images = {name: fit_frame(img, rule) for name, img in images.items()}
        return images, order

    def state_tensor(self, spec: EmbodimentSpec, state: np.ndarray) -> torch.Tensor:
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape[0] != spec.state_dim:
            raise ValueError(f"embodiment '{spec.name}' expects a state of {spec.state_dim} "
                             f"values, got {state.shape[0]}")
        if not np.all(np.isfinite(state)):
            raise ValueError("state contains NaN or inf")
        norm = self.norm_stats.normalise(spec, "state", state)
        return self._to_slots(norm[None], spec.state_slots, self.decoder.cfg.state_width)

    # ---- inference ----------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, obs: Observation, *, seed: int | None = None, steps: int | None = None,
                prefix: np.ndarray | None = None,
                guide: np.ndarray | None = None) -> ActionChunk:
        """Sample one action chunk. ``prefix`` ([d, action_dim], embodiment units): actions
        already committed to the robot; the chunk starts with them exactly. ``guide`` ([g,
        action_dim]): what the previous chunk planned for the g steps after the prefix; the
        sampler is pulled toward it with decaying weights (``flow.soft_weights``), so the chunk
        leaves the old plan gradually. Needs a prefix (it is ignored without one)."""
        spec = self.spec(obs.embodiment)
        if not obs.instruction or not obs.instruction.strip():
            raise ValueError("instruction is empty")
        steps = int(steps or self.config.flow_steps)
        if self.compiled:  # a new chunk: CUDA-graph outputs of the last one may be reused
            torch.compiler.cudagraph_mark_step_begin()
        t0 = time.perf_counter()
        state = self.state_tensor(spec, obs.state)
        images, order = self.camera_inputs(spec, obs)
        inputs = self.backbone.prepare(images, order, spec.prompt, obs.instruction,
                                       self.config.instruction_first)
        t1 = time.perf_counter()
        hidden, mask = self.backbone(inputs)
        kvs, attn_mask = self.decoder.encode_context(hidden.to(self.dtype), mask)
        self._sync()
        t2 = time.perf_counter()
        am, sm = self._masks(spec)
        cfg = self.decoder.cfg
        if seed is None:
            seed = self._calls
        self._calls += 1
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        noise = torch.randn((1, spec.horizon, cfg.action_width), generator=gen,
                            device=self.device, dtype=torch.float32).to(self.dtype)
        prefix_t, prefix_len = None, 0
        if prefix is not None and len(prefix) > 0:
            prefix = np.asarray(prefix, dtype=np.float64)
            if prefix.ndim != 2 or prefix.shape[1] != spec.action_dim:
                raise ValueError(f"prefix must be [d, {spec.action_dim}], got {prefix.shape}")
            if not np.all(np.isfinite(prefix)):
                raise ValueError("prefix contains NaN or inf")
            prefix_len = min(len(prefix), spec.horizon)
            padded = np.zeros((spec.horizon, spec.action_dim))
            padded[:prefix_len] = self.norm_stats.normalise(spec, "action", prefix[:prefix_len])
            prefix_t = self._to_slots(padded[None], spec.action_slots, cfg.action_width)
        guide_t = guide_w = None
        if prefix_t is not None and guide is not None and len(guide) > 0:
            guide = np.asarray(guide, dtype=np.float64)
            if guide.ndim != 2 or guide.shape[1] != spec.action_dim:
                raise ValueError(f"guide must be [g, {spec.action_dim}], got {guide.shape}")
            if not np.all(np.isfinite(guide)):
                raise ValueError("guide contains NaN or inf")
            g = min(len(guide), spec.horizon - prefix_len)
            padded[prefix_len:prefix_len + g] = self.norm_stats.normalise(spec, "action",
                                                                          guide[:g])
            guide_t = self._to_slots(padded[None], spec.action_slots, cfg.action_width)
            guide_w = torch.as_tensor(soft_weights(prefix_len, g, spec.horizon),
                                      device=self.device)
        x = self._sample(self.decoder, kvs, attn_mask, state, am, sm, noise, steps, prefix_t,
                         prefix_len, guide=guide_t, guide_w=guide_w)
        out = x[0, :, spec.action_slots].float().cpu().numpy().astype(np.float64)
        t3 = time.perf_counter()
        actions = self.norm_stats.denormalise(spec, "action", out)
        if prefix_len:
            # Exact in embodiment units (normalise/denormalise round off ~1e-7).
            actions[:prefix_len] = prefix[:prefix_len]
        timing = {"preprocess": (t1 - t0) * 1e3, "backbone": (t2 - t1) * 1e3,
                  "decoder": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
        return ActionChunk(actions=actions, embodiment=spec.name, stamp=obs.stamp, dt=spec.dt,
                           timing_ms=timing)

    # ---- training -----------------------------------------------------------------------
    def loss(self, obs: Observation | Sequence[Observation], actions: np.ndarray, *,
             prefix_len: int | torch.Tensor = 0, generator: torch.Generator | None = None,
             features: tuple[torch.Tensor, torch.Tensor] | None = None,
             samples: int = 1) -> torch.Tensor:
        """Flow-matching loss for one observation and its target chunk [H, A], or a batch of
        observations of one embodiment and their chunks [B, H, A] (embodiment units): the mean
        over the batch, one backbone and one decoder pass.

        ``features``: precomputed ``self.features(obs)`` (frozen-backbone training).
        ``samples``: flow times and noises per observation (``flow_matching_loss``).
        """
        single = isinstance(obs, Observation)
        batch = [obs] if single else list(obs)
        actions = np.asarray(actions, np.float64)
        if single:
            actions = actions[None]
        if not batch or actions.shape[0] != len(batch):
            raise ValueError(f"{len(batch)} observations but {actions.shape[0]} target chunks")
        names = {o.embodiment for o in batch}
        if len(names) != 1:
            raise ValueError(f"one embodiment per batch (its horizon and masks), got "
                             f"{sorted(names)}")
        spec = self.spec(batch[0].embodiment)
        hidden, mask = features if features is not None else self.features(batch)
        kvs, attn_mask = self.decoder.encode_context(hidden, mask)
        target = self.norm_stats.normalise(spec, "action", actions)
        target_t = self._to_slots(target, spec.action_slots, self.decoder.cfg.action_width)
        am, sm = self._masks(spec)
        states = torch.cat([self.state_tensor(spec, o.state) for o in batch])
        b = len(batch)
        return flow_matching_loss(self.decoder, target_t, states, am.expand(b, -1),
                                  sm.expand(b, -1), kvs, attn_mask, prefix_len=prefix_len,
                                  generator=generator, samples=samples)

    def require_trained(self, embodiment: str) -> EmbodimentSpec:
        """The embodiment's spec; a clear error when this checkpoint was trained, but not for
        it (its prompt then conditions nothing the decoder learned: noise, not actions)."""
        spec = self.spec(embodiment)
        if self.trained_embodiments is not None and embodiment not in self.trained_embodiments:
            raise ConfigError(f"this checkpoint was trained for {self.trained_embodiments}, "
                              f"not '{embodiment}': fine-tune it on {embodiment} "
                              "demonstrations first (qwen-vla-ros train --init)")
        return spec

    # ---- checkpoint io ------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(directory / BACKBONE_DIR)
        state = {k: v.detach().contiguous().cpu() for k, v in self.decoder.state_dict().items()}
        save_file(state, str(directory / DECODER_FILE))
        self.norm_stats.save(directory / STATS_FILE)
        emb_dir = directory / EMBODIMENTS_DIR
        emb_dir.mkdir(exist_ok=True)
        import yaml

        for name, spec in self.embodiments.items():
            (emb_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec.to_dict(),
                                                                 sort_keys=False))
        meta = {"format_version": FORMAT_VERSION, "policy": self.config.to_dict(),
                "embodiments": sorted(self.embodiments),
                "backbone_model_type": self.backbone.model_type}
        if self.trained_embodiments is not None:
            meta["trained_embodiments"] = sorted(self.trained_embodiments)
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "float32") -> QwenVLAPolicy:
        from qwen_vla_ros.model.checkpoint import load_policy

        return load_policy(directory, device=device, dtype=dtype)
