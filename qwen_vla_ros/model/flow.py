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
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean squared velocity error over live dims of the non-prefix steps.

    actions [B,H,A] normalised, in unified slots; masks [B,A] / [B,S] of 0/1.
    """
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


def sample_actions(decoder: ActionDecoder, kvs, attn_mask, state: torch.Tensor,
                   action_mask: torch.Tensor, state_mask: torch.Tensor, noise: torch.Tensor,
                   steps: int, prefix: torch.Tensor | None = None,
                   prefix_len: int = 0) -> torch.Tensor:
    """Integrate the flow from noise (t=0) to actions (t=1) with ``steps`` Euler steps.

    No host synchronisation inside the loop: every time value is a Python constant or a
    tensor built on the device, and the loop count is fixed.
    """
    if steps < 1:
        raise ValueError(f"flow steps must be >= 1, got {steps}")
    b, h, _ = noise.shape
    pmask = prefix_mask(b, h, prefix_len, noise.device)
    x = noise
    if prefix is not None and prefix_len > 0:
        keep = pmask[..., None]
        x = torch.where(keep, prefix, x)
    dt = 1.0 / steps
    ones = torch.ones((b, h), device=noise.device, dtype=noise.dtype)
    for i in range(steps):
        t_tok = torch.where(pmask, ones, ones * (i * dt))
        v = decoder(x, t_tok, state, action_mask, state_mask, pmask, kvs, attn_mask)
        x = x + dt * v
        if prefix is not None and prefix_len > 0:
            x = torch.where(keep, prefix, x)
    return x
