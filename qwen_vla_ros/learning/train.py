"""Fine-tune a policy on demonstrations: the flow-matching loss of ``QwenVLAPolicy.loss``,
AdamW with linear warm-up and cosine decay, gradient clipping, a validation split by episode,
checkpoints every K steps (each complete, written to a temporary folder and renamed), resume
with the same step count and weights as an uninterrupted run, ``train_log.json`` and a
``train.png`` loss curve. Deterministic for a given ``seed`` on one device.

Norm statistics are fitted on the training episodes (``NormStats.from_dataset``) and stored in
the checkpoint; a checkpoint given with ``init`` keeps its weights and other embodiments.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen_vla_ros.errors import ConfigError
from qwen_vla_ros.learning.dataset import (
    DatasetError,
    DatasetSettings,
    Episode,
    load_episodes,
    training_settings,
)
from qwen_vla_ros.model.normalize import NormStats
from qwen_vla_ros.model.policy import Observation, QwenVLAPolicy
from qwen_vla_ros.runtime.observation import history_label

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.json"


@dataclass
class TrainConfig:
    steps: int | None = None  # optimizer steps; or stop after ``minutes``
    minutes: float | None = None
    batch: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    val_fraction: float = 0.1  # of the episodes (at least one when there are two or more)
    val_every: int = 100
    # Validation samples per check (the same ones, with the same noise, every time): the
    # curve's noise and so which checkpoint --best-out keeps; each costs a forward pass.
    val_samples: int = 64
    checkpoint_every: int = 500
    # Also keep the weights every this many steps (0: off), each in a folder of its own: the
    # lowest validation loss has not picked the better closed-loop policy here (VLN, 4/40
    # against the last weights' 12/40), so the steps can be judged in closed loop instead.
    keep_every: int = 0
    freeze_backbone: bool = False
    device: str = "cpu"
    # Share of training samples given a committed prefix (1 .. horizon/2 clean leading steps
    # the model must continue, as real-time chunking asks at run time: rtc_prefix_steps);
    # without it a prefix at run time is a context the decoder never saw.
    prefix_fraction: float = 0.5
    # Gaussian noise on each training sample's observed joint state, in units of each
    # dimension's standard deviation (the data's norm stats); the target stays what was
    # demonstrated. Without it the model leans on the state it is given and, closed loop, an
    # arm off the demonstrated path stays off it (a training seed driven by run 5's policy
    # stayed 0.13-0.19 rad off in the right shoulder from its first second). 0: off.
    state_noise: float = 0.0
    # Share of each batch drawn from the first ``start_seconds`` of the episodes (the rest
    # uniformly from all samples). Every episode starts from the same pose, so there the
    # images alone say where the object is; later the state says where the arm is heading.
    # Run 7's policy, sampled at the start of held-out episodes, was further from the
    # demonstrated first chunk than the training episodes' mean first chunk. 0: uniform.
    start_share: float = 0.0
    start_seconds: float = 1.5
    # Random translation of each training sample's frames by up to this many pixels in x and
    # y (edge pixels repeated), the same shift for every frame of one sample. With 50
    # demonstrations the model sees about 45 cube positions and ~100 epochs of the same
    # frames; shifted frames ask it to place the cube against the table and the arms rather
    # than at memorised pixels (DrQ, Diffusion Policy's random crop). Measured at 12 px (run
    # 13, docs/benchmarks.md): the tiny preset then stopped reading the cube at all. 0: off.
    shift_pixels: int = 0
    # Flow times and noises drawn per sample against its one backbone pass (the decoder runs
    # on batch x this many rows). The backbone is most of a step's cost on the CPU (forward
    # and backward ~80 %, docs/benchmarks.md run 11), and each sample's flow-matching loss at
    # one random time is a noisy signal for what the backbone should read from the frames;
    # several draws average that noise for the price of decoder passes only. 1: off.
    noise_samples: int = 1
    # Joint training: the first ``lead_share`` of the run's budget (its steps, or its
    # minutes) draws every batch from the ``lead`` embodiment alone, the rest by the
    # sampling weights (a curriculum: one body's skill first, then both). Measured once
    # (docs/benchmarks.md, "Why the joint runs' VLN body never used the words"): that run's
    # VLN body did not pick up the words in its lead either; whether a start does is a
    # matter of the initial weights more than of the arm's batches. None: off.
    lead: str | None = None
    lead_share: float = 0.0

    def __post_init__(self) -> None:
        if self.steps is None and self.minutes is None:
            raise ConfigError("give --steps or --minutes")
        if self.batch < 1 or self.lr <= 0:
            raise ConfigError("batch must be >= 1 and lr > 0")
        if not 0.0 <= self.prefix_fraction <= 1.0:
            raise ConfigError(f"prefix_fraction must be in [0, 1], got {self.prefix_fraction}")
        if not self.state_noise >= 0.0:
            raise ConfigError(f"state_noise must be >= 0, got {self.state_noise}")
        if not (0.0 <= self.start_share <= 1.0 and self.start_seconds > 0):
            raise ConfigError(f"start_share must be in [0, 1] and start_seconds > 0, got "
                              f"{self.start_share}, {self.start_seconds}")
        if self.shift_pixels < 0:
            raise ConfigError(f"shift_pixels must be >= 0, got {self.shift_pixels}")
        if self.noise_samples < 1:
            raise ConfigError(f"noise_samples must be >= 1, got {self.noise_samples}")
        if self.val_samples < 1:
            raise ConfigError(f"val_samples must be >= 1, got {self.val_samples}")
        if self.keep_every < 0:
            raise ConfigError(f"keep_every must be >= 0 (0: off), got {self.keep_every}")
        if (self.lead is None) != (self.lead_share == 0.0) or not 0.0 <= self.lead_share < 1.0:
            raise ConfigError(f"lead and lead_share go together: an embodiment and a share "
                              f"in (0, 1), got {self.lead!r}, {self.lead_share}")



def budget_used(step: int, cfg: TrainConfig, elapsed_s: float) -> float:
    """How much of the run's budget is spent: its steps, or its minutes (0 .. 1)."""
    if cfg.steps is not None:
        return step / max(cfg.steps, 1)
    return elapsed_s / (cfg.minutes * 60)


def lr_at(step: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 0 over the run: its steps, or its minutes."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.steps is not None:
        progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    else:
        progress = elapsed_s / (cfg.minutes * 60)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


class Samples:
    """(episode, index) pairs over episodes, with the observation and target of each."""

    def __init__(self, episodes: Sequence[Episode], embodiment: str, cameras: Sequence[str]):
        self.episodes = list(episodes)
        self.embodiment, self.cameras = embodiment, tuple(cameras)
        self.index = [(e, i) for e, ep in enumerate(self.episodes) for i in range(len(ep))]

    def starts(self, seconds: float) -> np.ndarray:
        """Indices of the samples within ``seconds`` of their episode's first sample."""
        return np.array([k for k, (e, i) in enumerate(self.index)
                         if self.episodes[e].ticks[i] - self.episodes[e].ticks[0] < seconds],
                        np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def get(self, k: int) -> tuple[Observation, np.ndarray]:
        e, i = self.index[k]
        ep = self.episodes[e]
        images = {c: np.asarray(ep.frames[c][ep.frame_idx[i, j]])
                  for j, c in enumerate(self.cameras)}
        history: tuple = ()
        if ep.history_idx is not None:  # oldest first, labelled as the live node does
            cam = self.cameras[0]
            history = tuple((history_label(cam, float(age)), np.asarray(ep.frames[cam][idx]))
                            for idx, age in zip(ep.history_idx[i], ep.history_age[i],
                                                strict=True) if idx >= 0)
        obs = Observation(images=images, state=ep.states[i], instruction=ep.instruction,
                          embodiment=self.embodiment, stamp=float(ep.ticks[i]),
                          history=history)
        return obs, ep.actions[i]

    def batch(self, ks: Sequence[int]) -> tuple[list[Observation], np.ndarray]:
        pairs = [self.get(int(k)) for k in ks]
        return [o for o, _ in pairs], np.stack([a for _, a in pairs])


def split_episodes(episodes: Sequence[Episode], fraction: float, seed: int
                   ) -> tuple[list[Episode], list[Episode]]:
    """Validation episodes held out whole (never a sample of a training episode), and by
    start: episodes of one seed (a start recorded once per colour, ``collect --colours``) fall
    on one side, so validation sees starts training did not. ``fraction`` counts starts;
    where every episode has its own seed, the split is the per-episode one."""
    keys = [e.meta.get("seed", f"#{i}") for i, e in enumerate(episodes)]
    starts = list(dict.fromkeys(keys))
    order = np.random.default_rng(seed).permutation(len(starts))
    n_val = 0 if len(starts) < 2 else max(1, round(fraction * len(starts)))
    held = {starts[i] for i in order[:n_val]}
    val = [e for e, k in zip(episodes, keys, strict=True) if k in held]
    train = [e for e, k in zip(episodes, keys, strict=True) if k not in held]
    return train, val


def _write_checkpoint(policy: QwenVLAPolicy, folder: Path, extra: dict[str, Any]) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    policy.save_pretrained(tmp)
    for name, obj in extra.items():
        if name.endswith(".pt"):
            torch.save(obj, tmp / name)
        else:
            (tmp / name).write_text(json.dumps(obj, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def evaluate_loss(policy: QwenVLAPolicy, samples: Samples, n: int, seed: int,
                  batch: int = 16) -> float:
    """Mean flow-matching loss over ``n`` fixed samples with fixed noise."""
    if len(samples) == 0:
        return float("nan")
    gen = torch.Generator(device=policy.device).manual_seed(seed)
    ks = np.random.default_rng(seed).choice(len(samples), min(n, len(samples)), replace=False)
    policy.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(ks), batch):
            part = ks[i:i + batch]
            total += float(policy.loss(*samples.batch(part), generator=gen)) * len(part)
    return total / len(ks)


def instruction_swap_loss(policy: QwenVLAPolicy, samples: Samples, n: int, seed: int,
                          reword: Callable[[str], str | None], batch: int = 16
                          ) -> tuple[float, float, int]:
    """(mean flow-matching loss with each sample's own instruction, the same with the
    instruction ``reword`` makes of it, how many samples): the same fixed samples and noise
    for both; samples ``reword`` gives None for are left out. A policy that ignores the
    words scores both alike; one that follows them does worse when told another goal."""
    if len(samples) == 0:
        return float("nan"), float("nan"), 0
    ks = np.random.default_rng(seed).choice(len(samples), min(n, len(samples)), replace=False)
    ks = np.array([k for k in ks  # an episode's instruction, no frames decoded for it
                   if reword(samples.episodes[samples.index[k][0]].instruction) is not None],
                  np.int64)
    if len(ks) == 0:
        return float("nan"), float("nan"), 0
    policy.eval()
    totals = []
    for swap in (False, True):
        gen = torch.Generator(device=policy.device).manual_seed(seed)
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(ks), batch):
                observations, targets = samples.batch(ks[i:i + batch])
                if swap:
                    observations = [replace(o, instruction=reword(o.instruction))
                                    for o in observations]
                total += float(policy.loss(observations, targets, generator=gen)) * len(
                    observations)
        totals.append(total / len(ks))
    return totals[0], totals[1], len(ks)


def next_goal(text: str) -> str | None:
    """A vln_goto instruction in the same words naming the room's next object (red -> green
    -> blue -> yellow -> red); None for any other text. The language probe's other goal."""
    from qwen_vla_ros.sim.base import OBJECTS
    from qwen_vla_ros.sim.vln_task import named_object, reworded

    named = named_object(text)
    return None if named is None else reworded(
        text, OBJECTS[(OBJECTS.index(named) + 1) % len(OBJECTS)])


def action_error(policy: QwenVLAPolicy, samples: Samples, n: int, seed: int,
                 steps: int = 10) -> tuple[float, float]:
    """(mean |predicted - target| of sampled chunks, same for predicting the training
    action mean): the open-loop check, in normalised units."""
    spec = policy.spec(samples.embodiment)
    mean = policy.norm_stats.get(spec.name, "action", "mean", spec.action_dim)
    ks = np.random.default_rng(seed).choice(len(samples), min(n, len(samples)), replace=False)
    errs, base = [], []
    for k in ks:
        obs, target = samples.get(int(k))
        chunk = policy.predict(obs, seed=int(k), steps=steps)
        norm = policy.norm_stats
        errs.append(np.abs(norm.normalise(spec, "action", chunk.actions)
                           - norm.normalise(spec, "action", target)).mean())
        base.append(np.abs(norm.normalise(spec, "action", np.broadcast_to(mean, target.shape))
                           - norm.normalise(spec, "action", target)).mean())
    return float(np.mean(errs)), float(np.mean(base))


def state_std(policy: QwenVLAPolicy, spec) -> np.ndarray:
    """Per-dimension standard deviation of ``spec``'s state in the policy's norm stats."""
    if spec.state_dim == 0:
        return np.zeros(0)
    return policy.norm_stats.get(spec.name, "state", "std", spec.state_dim)


def jitter_states(observations: Sequence[Observation], rng: np.random.Generator,
                  std: np.ndarray) -> list[Observation]:
    """The observations with Gaussian noise of ``std`` (per dimension) on their states."""
    return [replace(o, state=np.asarray(o.state) + rng.normal(0.0, 1.0, len(std)) * std)
            for o in observations]


def shift_frame(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``image`` (H x W x C) moved ``dx`` pixels right and ``dy`` down, edges repeated."""
    h, w = image.shape[:2]
    pad = max(abs(dx), abs(dy))
    if pad == 0:
        return image
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    return padded[pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def shift_images(observations: Sequence[Observation], rng: np.random.Generator,
                 pixels: int) -> list[Observation]:
    """The observations with every frame (history too) shifted by one random (dx, dy) per
    observation, each uniform in [-pixels, pixels]."""
    out = []
    for o in observations:
        dx, dy = (int(v) for v in rng.integers(-pixels, pixels + 1, 2))
        out.append(replace(
            o, images={c: shift_frame(np.asarray(im), dx, dy) for c, im in o.images.items()},
            history=tuple((label, shift_frame(np.asarray(im), dx, dy))
                          for label, im in o.history)))
    return out


@dataclass
class Part:
    """One embodiment's share of a (joint) training run."""

    spec: Any  # EmbodimentSpec
    settings: DatasetSettings
    train: Samples
    val: Samples
    skipped: list
    weight: float  # sampling weight: each step's batch is one embodiment's

    @property
    def name(self) -> str:
        return self.spec.name


def train(data: Sequence[Path] | dict[str, Sequence[Path]], out: Path, cfg: TrainConfig,
          preset: str = "tiny", init: Path | None = None, embodiment: str = "aloha",
          resume: bool = False, settings: DatasetSettings | None = None,
          cache: Path | None = None, progress: bool = True,
          log: Callable[[str], None] = print,
          weights: dict[str, float] | None = None,
          cameras: Sequence[str] | None = None,
          image_pixels: int | None = None,
          image_pixels_of: Mapping[str, int] | None = None,
          best_out: Path | None = None, keep_out: Path | None = None,
          instruction_first: bool = False, prompt_summary: bool = False) -> dict[str, Any]:
    """Train on ``data``: bag folders of ``embodiment``, or {embodiment: folders} for one
    checkpoint of several bodies (joint training; ``weights``: how often each embodiment's
    batch is drawn, default equal). The loss and validation loss are logged per embodiment.

    ``cameras``: the ``embodiment``'s cameras this checkpoint sees (a subset of its spec's;
    default all), stored in the checkpoint's embodiment, so the policy node feeds it those.
    ``image_pixels``: per camera frame, for a new model (default the preset's); with
    ``init``, more than the checkpoint's (``presets.with_more_pixels``): a body new to it
    gets the larger frames, the bodies it knows keep theirs. A body in ``data`` the
    checkpoint does not know is added from config/embodiments (its prompt is new to the
    model: fine-tuning to a new robot).
    ``image_pixels_of``: {embodiment: pixels} below that, stored in the checkpoint's
    embodiment (its frames are resized to it, in training and at run time): a body whose
    frames need less detail costs less in a checkpoint shared with one that needs more.
    ``best_out``: also keep there the checkpoint with the lowest validation loss so far
    (weights and log, ``best`` in the log says its step; not resumable; a resumed run starts
    its best anew). With few episodes the validation loss can turn up while the training
    loss still falls: VLN-only on 180 episodes, 2026-12-06, lowest 0.15 near step 2750 of
    14300, 0.96 at the end.
    ``keep_out`` (default OUT_steps): with ``cfg.keep_every``, the weights and log at every
    that many steps, in ``step_NNNNNN`` folders (not resumable), for a closed-loop choice.
    ``instruction_first``: a new model's prompt layout (``PolicyConfig.instruction_first``);
    ``init`` and ``resume`` keep the checkpoint's. ``prompt_summary``: the same for
    ``DecoderConfig.prompt_summary``."""
    from tqdm import tqdm

    from qwen_vla_ros.embodiment.spec import load_embodiment
    from qwen_vla_ros.model.presets import build_preset, with_more_pixels

    sources = dict(data) if isinstance(data, dict) else {embodiment: list(data)}
    weights = weights or {}
    unknown = sorted(set(weights) - set(sources))
    if unknown:
        raise ConfigError(f"sampling weights for {unknown}, which have no --data")
    if cfg.lead is not None and (cfg.lead not in sources or len(sources) < 2):
        raise ConfigError(f"lead embodiment {cfg.lead!r}: it must be one of two or more "
                          f"bodies in --data, got {sorted(sources)}")
    unknown = sorted(set(image_pixels_of or {}) - set(sources))
    if unknown:
        raise ConfigError(f"image pixels for {unknown}, which have no --data")
    if image_pixels is not None and resume:
        raise ConfigError("image_pixels shapes a new model; --resume keeps the checkpoint's")
    for name, on in (("instruction_first", instruction_first),
                     ("prompt_summary", prompt_summary)):
        if on and (resume or init is not None):
            raise ConfigError(f"{name} shapes a new model; --init and --resume keep the "
                              "checkpoint's")
    torch.manual_seed(cfg.seed)
    state = None
    if resume:
        if not (out / STATE_FILE).exists():
            raise ConfigError(f"--resume: {out} holds no {STATE_FILE} (no earlier run there)")
        policy = QwenVLAPolicy.from_pretrained(out, device=cfg.device)
        state = torch.load(out / STATE_FILE, weights_only=False)
    elif init is not None:
        policy = QwenVLAPolicy.from_pretrained(init, device=cfg.device)
        if image_pixels is not None:  # larger frames for a new body; the others keep theirs
            policy = with_more_pixels(policy, image_pixels)
        for name in sources:
            if name not in policy.embodiments:  # a body new to the checkpoint: its prompt
                spec = load_embodiment(name)
                spec.check_width(policy.decoder.cfg.action_width)
                policy.embodiments[name] = spec
                log(f"train: {name} is new to {init}; its spec from config/embodiments")
    else:
        policy = build_preset(preset, list(sources), seed=cfg.seed, device=cfg.device,
                              image_pixels=image_pixels, instruction_first=instruction_first,
                              prompt_summary=prompt_summary)
    if cameras:
        policy.embodiments[embodiment] = policy.spec(embodiment).with_cameras(cameras)
    for name, pixels in (image_pixels_of or {}).items():
        policy.embodiments[name] = policy.spec(name).with_image_pixels(pixels)
    parts: list[Part] = []
    for name, paths in sources.items():
        spec = policy.spec(name)
        part_settings = training_settings(spec, settings, policy.backbone.pixels.resize_rule)
        episodes, skipped = load_episodes(paths, spec, part_settings, cache=cache, log=log)
        if not episodes:
            raise DatasetError(f"no usable {name} demonstrations: " + "; ".join(
                f"{s.bag}: {s.reason}" for s in skipped))
        train_eps, val_eps = split_episodes(episodes, cfg.val_fraction, cfg.seed)
        if state is None:
            stats = NormStats.from_dataset(spec, np.concatenate([e.states for e in train_eps]),
                                           np.concatenate([e.actions for e in train_eps]))
            policy.norm_stats = policy.norm_stats.merged(stats)
        w = float(weights.get(name, 1.0))
        if not w > 0:
            raise ConfigError(f"sampling weight of {name} must be > 0, got {w}")
        parts.append(Part(spec, part_settings, Samples(train_eps, spec.name, spec.cameras),
                          Samples(val_eps, spec.name, spec.cameras), skipped, w))
    probs = np.array([p.weight for p in parts]) / sum(p.weight for p in parts)
    policy.trained_embodiments = sorted(set(policy.trained_embodiments or []) | set(sources))
    if cfg.freeze_backbone:
        for p in policy.backbone.parameters():
            p.requires_grad_(False)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    step = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        gen.set_state(state["torch_gen"])
        torch.set_rng_state(state["torch_rng"])
        history, step = state["history"], int(state["step"])
    for part, share in zip(parts, probs, strict=True):
        log(f"train {part.name}: {len(part.train)} samples from "
            f"{len(part.train.episodes)} episodes, validation {len(part.val)} from "
            f"{len(part.val.episodes)}; {len(part.skipped)} bag(s) skipped"
            + (f"; sampling weight {share:.2f}" if len(parts) > 1 else ""))
    if cfg.lead is not None:
        log(f"train: the first {cfg.lead_share:.0%} of the budget trains {cfg.lead} alone")
    log(f"train: {sum(p.numel() for p in params) / 1e6:.2f} M trainable parameters")
    out.mkdir(parents=True, exist_ok=True)

    def snapshot() -> dict[str, Any]:
        return {"optimizer": opt.state_dict(), "numpy_rng": rng.bit_generator.state,
                "torch_gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "history": history, "step": step}

    def data_of(p: Part) -> dict[str, Any]:
        return {"dataset": asdict(p.settings),
                "train_episodes": [str(e.bag) for e in p.train.episodes],
                "val_episodes": [str(e.bag) for e in p.val.episodes],
                "train_seeds": sorted(e.meta["seed"] for e in p.train.episodes
                                      if "seed" in e.meta),
                "skipped": [{"bag": str(s.bag), "reason": s.reason} for s in p.skipped]}

    first = parts[0]
    meta = {"config": asdict(cfg), "preset": preset, "init": str(init) if init else None,
            "embodiment": first.name, "cameras": list(first.spec.cameras),
            "image_pixels": policy.config.image_pixels,
            "instruction_first": policy.config.instruction_first,
            "prompt_summary": policy.decoder.cfg.prompt_summary,
            "image_pixels_of": {p.name: p.spec.image_pixels for p in parts
                                if p.spec.image_pixels is not None}, **data_of(first)}
    if len(parts) > 1:  # joint training: every embodiment's data, and its share of steps
        meta["embodiments"] = {p.name: {"weight": float(w), **data_of(p)}
                               for p, w in zip(parts, probs, strict=True)}

    def validate() -> dict[str, float]:
        losses: dict[str, float] = {}
        ratios: dict[str, float] = {}
        for p in parts:
            if p.spec.kind == "waypoints":  # vln_goto's language probe: told another goal
                own, other, n = instruction_swap_loss(policy, p.val, cfg.val_samples, cfg.seed,
                                                      next_goal)
                if n:
                    ratios[f"val_language_ratio/{p.name}"] = other / own
                if n == min(cfg.val_samples, len(p.val)):  # none left out: evaluate_loss's
                    losses[p.name] = own                   # samples and noise, already run
            if p.name not in losses:
                losses[p.name] = evaluate_loss(policy, p.val, cfg.val_samples, cfg.seed)
        rec = {"val_loss": float(sum(w * losses[p.name] for p, w in zip(parts, probs,
                                                                        strict=True)))}
        if len(parts) > 1:
            rec.update({f"val_loss/{n}": v for n, v in losses.items()})
        return {**rec, **ratios}

    if not history:  # where the validation curve starts
        history.append({"step": 0, **validate(), "seconds": 0.0})
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) \
        if policy.device.type == "cuda" else contextlib.nullcontext()
    noise_std = {p.name: cfg.state_noise * state_std(policy, p.spec) for p in parts}
    starts = {p.name: p.train.starts(cfg.start_seconds) for p in parts}
    started = time.monotonic()
    # A resumed run continues the log's clock; its speed counts this run's steps only.
    first_step, offset_s = step, float(history[-1].get("seconds", 0.0))
    total = cfg.steps
    bar = tqdm(total=total, initial=step, unit="step", disable=not progress, desc="train")
    best: dict[str, Any] = {"step": None, "val_loss": math.inf}  # for best_out
    keep_dir = Path(keep_out) if keep_out is not None else out.with_name(out.name + "_steps")
    policy.train()
    while True:
        if cfg.steps is not None and step >= cfg.steps:
            break
        # --minutes is the run's whole budget, as --steps is: a resumed run counts the
        # minutes already trained, and its cosine goes on from where it was
        trained_s = offset_s + time.monotonic() - started
        if cfg.minutes is not None and trained_s >= cfg.minutes * 60:
            break
        lr = lr_at(step, cfg, trained_s)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        if cfg.lead is not None and budget_used(step, cfg, trained_s) < cfg.lead_share:
            part = next(p for p in parts if p.name == cfg.lead)
        else:
            part = parts[int(rng.choice(len(parts), p=probs))] if len(parts) > 1 else first
        ks = rng.integers(0, len(part.train), cfg.batch)
        if cfg.start_share > 0:
            early = rng.random(cfg.batch) < cfg.start_share
            ks[early] = rng.choice(starts[part.name], int(early.sum()))
        horizon = part.spec.horizon
        # Committed prefixes where an executor continues one (rtc); navigation never does.
        share = cfg.prefix_fraction if part.spec.kind != "waypoints" else 0.0
        prefix = rng.integers(1, max(horizon // 2, 1) + 1, cfg.batch) * (
            rng.random(cfg.batch) < share)
        observations, targets = part.train.batch(ks)
        if cfg.state_noise > 0:
            observations = jitter_states(observations, rng, noise_std[part.name])
        if cfg.shift_pixels > 0:
            observations = shift_images(observations, rng, cfg.shift_pixels)
        with autocast:  # bf16 on a GPU (fp32 weights and optimiser), fp32 on CPU
            loss = policy.loss(observations, targets, generator=gen,
                               prefix_len=torch.as_tensor(prefix, device=policy.device),
                               samples=cfg.noise_samples)
        loss.backward()
        grad = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        opt.step()
        step += 1
        rec = {"step": step, "loss": float(loss.detach()), "lr": lr, "grad": grad,
               "seconds": offset_s + time.monotonic() - started}
        if len(parts) > 1:
            rec["embodiment"] = part.name
        if step % cfg.val_every == 0 or step == cfg.steps:
            rec.update(validate())
            if best_out is not None and rec["val_loss"] < best["val_loss"]:
                best.update(step=step, val_loss=rec["val_loss"])
                _write_checkpoint(policy, Path(best_out), {LOG_FILE: {
                    **meta, "history": [*history, rec], "best": dict(best)}})
            policy.train()
        history.append(rec)
        bar.update(1)
        rate = (step - first_step) * cfg.batch / max(rec["seconds"] - offset_s, 1e-9)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", samples_s=f"{rate:.0f}")
        if cfg.keep_every and step % cfg.keep_every == 0:
            policy.eval()
            _write_checkpoint(policy, keep_dir / f"step_{step:06d}", {LOG_FILE: {
                **meta, "history": history}})
            policy.train()
        if step % cfg.checkpoint_every == 0:
            policy.eval()
            _write_checkpoint(policy, out, {STATE_FILE: snapshot(), LOG_FILE: {
                **meta, "history": history}})
            policy.train()
    bar.close()
    policy.eval()
    kept = {"best": {**best, "out": str(best_out)}} if best["step"] is not None else {}
    _write_checkpoint(policy, out, {STATE_FILE: snapshot(), LOG_FILE: {
        **meta, "history": history, **kept}})
    plot_history(history, out / "train.png")
    final = {"steps": step, "samples_per_s": (step - first_step) * cfg.batch / max(
        time.monotonic() - started, 1e-9), "device": str(policy.device),
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 1e9
        if policy.device.type == "cuda" else None,
        "last_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
        "val_loss": next((h["val_loss"] for h in reversed(history) if "val_loss" in h), None),
        "initial_val_loss": history[0].get("val_loss")}
    final.update(kept)
    peak = final["peak_gpu_memory_gb"]
    log(f"train: {step} steps ({final['samples_per_s']:.0f} samples/s on {final['device']}"
        + (f", peak {peak:.2f} GB" if peak is not None else "") + f"), loss "
        f"{final['last_loss']}, validation {final['val_loss']} -> {out}")
    return {**meta, **final}


def plot_history(history: Sequence[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    trained = [h for h in history if "loss" in h]
    if trained:
        steps = [h["step"] for h in trained]
        losses = np.array([h["loss"] for h in trained])
        k = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps, losses, color="#cbd5e1", lw=0.8, label="train (per step)")
        ax.plot(steps[k - 1:], smooth, color="#2563eb", label=f"train (mean of {k})")
    val = [(h["step"], h["val_loss"]) for h in history
           if "val_loss" in h and np.isfinite(h["val_loss"])]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", color="#dc2626", label="validation")
    parts = sorted({k.split("/", 1)[1] for h in history for k in h
                    if k.startswith("val_loss/")})
    for name, colour in zip(parts, ("#16a34a", "#9333ea", "#ea580c"), strict=False):
        pts = [(h["step"], h[f"val_loss/{name}"]) for h in history if f"val_loss/{name}" in h
               and np.isfinite(h[f"val_loss/{name}"])]
        if pts:
            ax.plot(*zip(*pts, strict=True), ".--", color=colour, label=f"validation, {name}")
    ratios = sorted({k for h in history for k in h if k.startswith("val_language_ratio/")})
    handles, labels = ax.get_legend_handles_labels()
    if ratios:
        ax2 = ax.twinx()
        for key in ratios:
            pts = [(h["step"], h[key]) for h in history if key in h]
            ax2.plot(*zip(*pts, strict=True), "^:", color="#64748b",
                     label=f"language probe, {key.split('/', 1)[1]} (other goal / own)")
        ax2.axhline(1.0, color="#94a3b8", lw=0.6)
        ax2.set_ylabel("loss told another goal / own")
        more = ax2.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    # one legend for both axes, below the plot: over it, it hid the curves of joint runs
    rows = (len(handles) + 1) // 2
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0.0, 0.055 * rows, 1.0, 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)
