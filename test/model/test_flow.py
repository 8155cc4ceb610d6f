"""Flow-matching loss with several flow times per observation (``samples``): plain torch, no
ROS, no transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen_vla_ros.model.dit import ActionDecoder, DecoderConfig
from qwen_vla_ros.model.flow import flow_matching_loss, sample_actions, soft_weights

B, H, N = 3, 8, 5  # observations, horizon, context tokens


def setup(seed: int = 0, prompt_summary: bool = False):
    torch.manual_seed(seed)
    cfg = DecoderConfig(width=32, depth=2, heads=2, action_width=6, state_width=4,
                        max_horizon=H, context_dim=16, time_embed_dim=16,
                        prompt_summary=prompt_summary)
    decoder = ActionDecoder(cfg)
    context = torch.randn(B, N, cfg.context_dim, requires_grad=True)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, -2:] = False  # one padded context, so the attention mask is repeated too
    actions = torch.randn(B, H, cfg.action_width)
    state = torch.randn(B, cfg.state_width)
    am = torch.ones(B, cfg.action_width)
    am[2, 4:] = 0  # an embodiment with fewer live action dims
    sm = torch.ones(B, cfg.state_width)
    prefix = torch.tensor([0, 2, 3])
    return decoder, context, mask, actions, state, am, sm, prefix


def loss_and_grad(samples: int, repeat_inputs: int, prompt_summary: bool = False):
    decoder, context, mask, actions, state, am, sm, prefix = setup(
        prompt_summary=prompt_summary)

    def rep(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(repeat_inputs, dim=0)

    kvs, attn_mask = decoder.encode_context(rep(context), rep(mask))
    loss = flow_matching_loss(decoder, rep(actions), rep(state), rep(am), rep(sm), kvs,
                              attn_mask, prefix_len=rep(prefix),
                              generator=torch.Generator().manual_seed(7), samples=samples)
    loss.backward()
    return loss.detach(), context.grad.clone()


@pytest.mark.parametrize("prompt_summary", [False, True])
def test_k_samples_equal_the_batch_repeated_k_times(prompt_summary):
    loss_k, grad_k = loss_and_grad(samples=4, repeat_inputs=1, prompt_summary=prompt_summary)
    loss_rep, grad_rep = loss_and_grad(samples=1, repeat_inputs=4,
                                       prompt_summary=prompt_summary)
    torch.testing.assert_close(loss_k, loss_rep)
    torch.testing.assert_close(grad_k, grad_rep)  # the context's gradient: summed over draws


def test_more_draws_are_other_draws_than_one():
    loss_1, _ = loss_and_grad(samples=1, repeat_inputs=1)
    loss_4, _ = loss_and_grad(samples=4, repeat_inputs=1)
    assert not torch.allclose(loss_1, loss_4)


def test_zero_samples_are_refused():
    decoder, context, mask, actions, state, am, sm, _ = setup()
    kvs, attn_mask = decoder.encode_context(context, mask)
    with pytest.raises(ValueError, match="samples"):
        flow_matching_loss(decoder, actions, state, am, sm, kvs, attn_mask, samples=0)


def test_soft_weights_decay_from_the_prefix_end_to_zero():
    w = soft_weights(prefix_len=3, guide_len=10, horizon=20)
    assert (w[:3] == 0).all() and (w[13:] == 0).all()
    inside = w[3:13]
    assert (inside > 0).all() and (inside < 1).all() and (np.diff(inside) < 0).all()
    assert soft_weights(3, 40, 20)[19] > 0  # clipped to the horizon
    assert not soft_weights(3, 0, 20).any()


def test_guidance_weight_one_ends_on_the_guide_and_zero_changes_nothing():
    decoder, context, mask, actions, state, am, sm, _ = setup()
    kvs, attn_mask = decoder.encode_context(context, mask)
    noise = torch.randn(B, H, decoder.cfg.action_width, generator=torch.Generator()
                        .manual_seed(3))
    prefix = torch.zeros_like(noise)
    args = (decoder, kvs, attn_mask, state, am, sm, noise, 5, prefix, 2)
    with torch.no_grad():
        free = sample_actions(*args)
        none = sample_actions(*args, guide=actions, guide_w=torch.zeros(H))
        full = sample_actions(*args, guide=actions, guide_w=torch.tensor([0.0] * 2 + [1.0]
                                                                         * (H - 2)))
    torch.testing.assert_close(none, free)
    torch.testing.assert_close(full[:, 2:], actions[:, 2:], atol=1e-5, rtol=0)
    torch.testing.assert_close(full[:, :2], prefix[:, :2])  # the prefix stays held


def test_the_prompt_summary_is_the_last_real_token_and_reaches_every_block_by_adaln():
    """With ``prompt_summary`` the decoder reads the context's last real token (not a padding
    token) through adaLN: with every block's cross-attention output cut, changing that token
    still changes the velocity; without the option it cannot."""
    velocities = {}
    for on in (False, True):
        decoder, context, mask, actions, state, am, sm, _ = setup(prompt_summary=on)
        context = context.detach()
        with torch.no_grad():
            for blk in decoder.blocks:
                blk.cross_proj.weight.zero_()
                blk.cross_proj.bias.zero_()
        t_tok = torch.full((B, H), 0.3)
        pmask = torch.zeros(B, H, dtype=torch.bool)
        last = mask.sum(1) - 1  # row 1 is padded: its last real token is not its last
        other = context.clone()
        shift = torch.randn(context.shape[-1], generator=torch.Generator().manual_seed(5))
        other[torch.arange(B), last] += shift  # not a constant: the summary's LayerNorm
        padded = context.clone()
        padded[1, -1] += shift  # a padding token: read by nothing
        with torch.no_grad():
            velocities[on] = [decoder(actions, t_tok, state, am, sm, pmask,
                                      decoder.encode_context(c, mask)[0], None)
                              for c in (context, other, padded)]
        if on:
            summary = decoder.encode_context(context, mask)[0].summary
            torch.testing.assert_close(summary[1], decoder.summary_in(context[1, N - 3]))
    same, moved, pad = velocities[False]
    torch.testing.assert_close(moved, same, rtol=0, atol=0)
    same, moved, pad = velocities[True]
    assert (moved - same).abs().amax(dim=(1, 2)).min() > 1e-4  # every row
    torch.testing.assert_close(pad, same, rtol=0, atol=0)
