"""Flow matching: training loss and an Euler sampler with prefix (real-time chunking) support.

Convention: x_t = t * actions + (1 - t) * noise, t = 0 is noise and t = 1 is data; the decoder
predicts the velocity actions - noise. A committed prefix (the first d steps of the chunk,
already sent to the robot) is clean data: those tokens are held at their given values and carry
t = 1 at every step, and training drops a random prefix into the batch the same way, so the
model learns to continue a given prefix rather than merely being overwritten by it.

Soft guidance (real-time chunking's soft mask, Black et al. 2025, "Real-Time Execution of Action
Chunking Flow Policies"): past the hard prefix, the steps the previous chunk still planned can be
pulled toward that plan with weights that decay from 1 to 0, so the new chunk leaves the old
plan gradually instead of at one junction. Here the pull is applied after each Euler step, toward
the plan's point on the same noise-to-data path (x_t of the plan), not by the paper's gradient
guidance: no backward pass, and the compiled step is unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from qwen_vla_ros.model.dit import ActionDecoder


def prefix_mask(batch: int, horizon: int, prefix_len: torch.Tensor | int,
                device: torch.device) -> torch.Tensor:
    steps = torch.arange(horizon, device=device)[None, :].expand(batch, -1)
    if isinstance(prefix_len, int):
        return steps < prefix_len
    return steps < prefix_len.to(device)[:, None]


def soft_weights(prefix_len: int, guide_len: int, horizon: int) -> np.ndarray:
    """Weights [horizon] of the soft guidance toward the previous plan: 0 on the hard prefix
    (held exactly), then for the ``guide_len`` planned steps after it an exponential decay from
    just under 1 to just over 0 (the paper's c * (e^c - 1) / (e - 1), c falling linearly), 0
    after."""
    w = np.zeros(horizon)
    end = min(horizon, prefix_len + max(0, guide_len))
    n = end - prefix_len
    if n > 0:
        c = (n - np.arange(n)) / (n + 1)
        w[prefix_len:end] = c * np.expm1(c) / (math.e - 1)
    return w


def flow_matching_loss(decoder: ActionDecoder, actions: torch.Tensor, state: torch.Tensor,
                       action_mask: torch.Tensor, state_mask: torch.Tensor,
                       kvs, attn_mask, *, prefix_len: torch.Tensor | int = 0,
                       generator: torch.Generator | None = None,
                       samples: int = 1) -> torch.Tensor:
    """Mean squared velocity error over live dims of the non-prefix steps.

    actions [B,H,A] normalised, in unified slots; masks [B,A] / [B,S] of 0/1. ``samples``:
    flow times and noises drawn per observation, all against the one context (``kvs``): the
    decoder runs on B * samples rows, the backbone that made ``kvs`` once.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if samples > 1:
        def rep(x: torch.Tensor) -> torch.Tensor:
            return x.repeat_interleave(samples, dim=0)

        actions, state, action_mask, state_mask = map(rep, (actions, state, action_mask,
                                                             state_mask))
        kvs = kvs.repeat_interleave(samples)
        attn_mask = None if attn_mask is None else rep(attn_mask)
        if isinstance(prefix_len, torch.Tensor):
            prefix_len = rep(prefix_len)
    b, h, _ = actions.shape
    dev = actions.device
    noise = torch.randn(actions.shape, generator=generator, device=dev, dtype=actions.dtype)
    t = torch.rand((b,), generator=generator, device=dev, dtype=actions.dtype)
    pmask = prefix_mask(b, h, prefix_len, dev)
    t_tok = torch.where(pmask, torch.ones_like(t[:, None]), t[:, None].expand(-1, h))
    x_t = t_tok[..., None] * actions + (1 - t_tok[..., None]) * noise
    target = actions - noise
    pred = decoder(x_t, t_tok, state, action_mask, state_mask, pmask, kvs, attn_mask)
    weight = (~pmask)[..., None].to(actions.dtype) * action_mask[:, None, :].to(actions.dtype)
    return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


def euler_step(decoder: ActionDecoder, x: torch.Tensor, t: torch.Tensor, dt: torch.Tensor,
               state: torch.Tensor, action_mask: torch.Tensor, state_mask: torch.Tensor,
               pmask: torch.Tensor, kvs, attn_mask, prefix: torch.Tensor) -> torch.Tensor:
    """One Euler step from flow time ``t`` to ``t + dt`` (0-d tensors on the device; ``dt``
    float32), the committed prefix (``pmask``) held at ``prefix``. Every input is a tensor of
    a fixed shape, so one compiled graph of this serves every flow-step count, time and prefix
    length. ``dt * v`` is formed in float32 and rounded once, as a Python-float step was: a
    bfloat16 ``dt`` (0.1 -> 0.10009765625) would overshoot t = 1 by 0.1 %."""
    t_tok = torch.where(pmask, torch.ones_like(x[..., 0]), t.expand(pmask.shape))
    v = decoder(x, t_tok, state, action_mask, state_mask, pmask, kvs, attn_mask)
    return torch.where(pmask[..., None], prefix, x + (dt * v.float()).to(x.dtype))


def sample_actions(decoder: ActionDecoder, kvs, attn_mask, state: torch.Tensor,
                   action_mask: torch.Tensor, state_mask: torch.Tensor, noise: torch.Tensor,
                   steps: int, prefix: torch.Tensor | None = None,
                   prefix_len: int = 0, step=euler_step, guide: torch.Tensor | None = None,
                   guide_w: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate the flow from noise (t=0) to actions (t=1) with ``steps`` Euler steps of
    ``step`` (``euler_step``, or a compiled copy of it).

    ``guide`` [B, H, W] (the previous plan, same slots as ``noise``) and ``guide_w`` [H] (see
    ``soft_weights``): after each step, x moves by ``guide_w`` of the way to the guide's point
    on its own path, t * guide + (1 - t) * noise.

    No host synchronisation inside the loop: the step times are built on the device once, and
    the loop count is fixed.
    """
    if steps < 1:
        raise ValueError(f"flow steps must be >= 1, got {steps}")
    b, h, _ = noise.shape
    pmask = prefix_mask(b, h, prefix_len if prefix is not None else 0, noise.device)
    held = prefix if prefix is not None else torch.zeros_like(noise)
    x = torch.where(pmask[..., None], held, noise)
    times = (torch.arange(steps, device=noise.device, dtype=torch.float32) / steps) \
        .to(noise.dtype)
    dt = torch.full((), 1.0 / steps, device=noise.device, dtype=torch.float32)
    w = None if guide is None or guide_w is None else guide_w.to(x.dtype)[None, :, None]
    for i in range(steps):
        x = step(decoder, x, times[i], dt, state, action_mask, state_mask, pmask, kvs,
                 attn_mask, held)
        if w is not None:
            t = (times[i].float() + dt).to(x.dtype)
            x = x + w * (t * guide + (1 - t) * noise - x)
    return x
