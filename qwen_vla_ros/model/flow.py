"""Flow matching: training loss and an Euler sampler with prefix (real-time chunking) support.

Convention: x_t = t * actions + (1 - t) * noise, t = 0 is noise and t = 1 is data; the decoder
predicts the velocity actions - noise. A committed prefix (the first d steps of the chunk,
already sent to the robot) is clean data: those tokens are held at their given values and carry
t = 1 at every step, and training drops a random prefix into the batch the same way, so the
model learns to continue a given prefix rather than merely being overwritten by it.
"""

from __future__ import annotations

import torch

from qwen_vla_ros.model.dit import ActionDecoder


def prefix_mask(batch: int, horizon: int, prefix_len: torch.Tensor | int,
                device: torch.device) -> torch.Tensor:
    steps = torch.arange(horizon, device=device)[None, :].expand(batch, -1)
    if isinstance(prefix_len, int):
        return steps < prefix_len
    return steps < prefix_len.to(device)[:, None]


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
        kvs = [(rep(k), rep(v)) for k, v in kvs]
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
                   prefix_len: int = 0, step=euler_step) -> torch.Tensor:
    """Integrate the flow from noise (t=0) to actions (t=1) with ``steps`` Euler steps of
    ``step`` (``euler_step``, or a compiled copy of it).

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
    for i in range(steps):
        x = step(decoder, x, times[i], dt, state, action_mask, state_mask, pmask, kvs,
                 attn_mask, held)
    return x
