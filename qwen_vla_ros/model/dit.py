"""DiT flow-matching action decoder.

Tokens: one proprioceptive-state token followed by ``horizon`` action tokens. Each block is
adaLN-modulated self-attention, cross-attention to the backbone's hidden states, and an MLP.
Time enters through adaLN *per token*: a token of the committed prefix (real-time chunking) is
clean data and carries t = 1, the rest carry the flow time of the sample. Cross-attention keys
and values depend only on the observation, so ``encode_context`` computes them once per chunk
and every flow step reuses them. With ``prompt_summary``, the backbone's last prompt token (in a
causal backbone the one that has read the whole prompt, the instruction included) is added to
every token's adaLN condition too, a path for the instruction that is not one key among the
image tokens' hundreds in cross-attention.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from qwen_vla_ros.errors import ConfigError


@dataclass
class DecoderConfig:
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    action_width: int = 32  # unified action space: every embodiment maps into these slots
    state_width: int = 32
    max_horizon: int = 64
    context_dim: int = 64  # backbone hidden size
    time_embed_dim: int = 256
    # The backbone's last prompt token added to every token's adaLN condition (module
    # docstring); False: cross-attention alone (every checkpoint trained before this option).
    prompt_summary: bool = False

    def __post_init__(self) -> None:
        for name in ("width", "depth", "heads", "action_width", "state_width", "max_horizon",
                     "context_dim", "time_embed_dim"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"decoder {name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ConfigError(f"decoder width {self.width} not divisible by heads {self.heads}")
        if (self.width // self.heads) % 2:
            raise ConfigError("decoder head dim must be even")

    @classmethod
    def from_dict(cls, data: dict) -> DecoderConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"decoder config: unknown key(s) {unknown}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of flow time t in [0, 1] (any shape) -> [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Context(NamedTuple):
    """What the decoder reads of one observation, computed once per chunk: each block's
    cross-attention K/V, and (``prompt_summary``) the prompt's summary [B, width] or None."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    summary: torch.Tensor | None = None

    def repeat_interleave(self, n: int) -> Context:
        """Each observation's context ``n`` times in a row (several samples per context)."""
        return Context([(k.repeat_interleave(n, 0), v.repeat_interleave(n, 0))
                        for k, v in self.kv],
                       None if self.summary is None else self.summary.repeat_interleave(n, 0))


class Block(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        d = cfg.width
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.cross_q = nn.Linear(d, d)
        self.cross_kv = nn.Linear(cfg.context_dim, 2 * d)
        self.cross_proj = nn.Linear(d, d)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, d))
        self.ada = nn.Linear(d, 9 * d)
        # Small, not zero (adaLN-Zero): a random-init decoder must already route the context
        # and the time to its output, or presets without weights ignore the observation.
        nn.init.normal_(self.ada.weight, std=0.02)
        nn.init.zeros_(self.ada.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.cross_kv(context).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                context_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        (sh1, sc1, g1, sh2, sc2, g2, sh3, sc3, g3) = self.ada(cond).chunk(9, dim=-1)
        h = _modulate(self.norm1(x), sh1, sc1)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v))
        x = x + g1 * self.proj(h.transpose(1, 2).reshape(b, n, d))
        h = _modulate(self.norm2(x), sh2, sc2)
        h = F.scaled_dot_product_attention(self._split(self.cross_q(h)), kv[0], kv[1],
                                           attn_mask=context_mask)
        x = x + g2 * self.cross_proj(h.transpose(1, 2).reshape(b, n, d))
        h = _modulate(self.norm3(x), sh3, sc3)
        return x + g3 * self.mlp(h)


class ActionDecoder(nn.Module):
    """velocity = decoder(noisy actions, per-token time, state, masks, cached context)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        # Inputs carry their dimension masks so the decoder knows which slots are live.
        self.action_in = nn.Linear(2 * cfg.action_width, d)
        self.state_in = nn.Linear(2 * cfg.state_width, d)
        self.pos = nn.Parameter(torch.randn(1, cfg.max_horizon + 1, d) * 0.02)
        self.prefix_flag = nn.Parameter(torch.zeros(d))
        self.time_mlp = nn.Sequential(nn.Linear(cfg.time_embed_dim, d), nn.SiLU(),
                                      nn.Linear(d, d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, cfg.action_width)
        nn.init.normal_(self.final_ada.weight, std=0.02)
        nn.init.zeros_(self.final_ada.bias)
        # Created last: with the option off, every other weight draws as it always did.
        self.summary_in = (nn.Sequential(nn.LayerNorm(cfg.context_dim),
                                         nn.Linear(cfg.context_dim, d))
                           if cfg.prompt_summary else None)

    def encode_context(self, context: torch.Tensor, context_mask: torch.Tensor | None
                       ) -> tuple[Context, torch.Tensor | None]:
        """Per-block cross-attention K/V (and the prompt's summary), once per chunk.
        ``context_mask``: True on the real tokens, padding on the right only (the backbone's
        batches are padded so)."""
        kvs = [blk.context_kv(context) for blk in self.blocks]
        summary = None
        if self.summary_in is not None:
            last = (context_mask.sum(dim=1) - 1 if context_mask is not None else
                    torch.full(context.shape[:1], context.shape[1] - 1, device=context.device))
            rows = torch.arange(context.shape[0], device=context.device)
            summary = self.summary_in(context[rows, last.long()])
        attn_mask = None
        if context_mask is not None and not bool(context_mask.all()):
            attn_mask = context_mask[:, None, None, :]
        return Context(kvs, summary), attn_mask

    def forward(self, x_t: torch.Tensor, t_tok: torch.Tensor, state: torch.Tensor,
                action_mask: torch.Tensor, state_mask: torch.Tensor,
                prefix_mask: torch.Tensor,
                kvs: Context, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """x_t [B,H,A]; t_tok [B,H] flow time per action token; state [B,S];
        action_mask [B,A]; state_mask [B,S]; prefix_mask [B,H]; ``kvs``: ``encode_context``'s
        -> velocity [B,H,A]."""
        horizon = x_t.shape[1]
        if horizon > self.cfg.max_horizon:
            raise ValueError(f"horizon {horizon} exceeds decoder max_horizon "
                             f"{self.cfg.max_horizon}")
        am = action_mask[:, None, :].expand(-1, horizon, -1).to(x_t.dtype)
        a_tok = self.action_in(torch.cat([x_t * am, am], dim=-1))
        a_tok = a_tok + prefix_mask[..., None].to(x_t.dtype) * self.prefix_flag
        s_tok = self.state_in(torch.cat([state * state_mask, state_mask.to(state.dtype)],
                                        dim=-1))[:, None]
        tokens = torch.cat([s_tok, a_tok], dim=1) + self.pos[:, : horizon + 1]
        # State token is observed data: time 1.
        t_all = torch.cat([torch.ones_like(t_tok[:, :1]), t_tok], dim=1)
        cond = self.time_mlp(timestep_embedding(t_all, self.cfg.time_embed_dim).to(x_t.dtype))
        if kvs.summary is not None:
            cond = cond + kvs.summary[:, None].to(cond.dtype)
        for blk, kv in zip(self.blocks, kvs.kv, strict=True):
            tokens = blk(tokens, cond, kv, attn_mask)
        shift, scale = self.final_ada(cond).chunk(2, dim=-1)
        out = self.out(_modulate(self.final_norm(tokens), shift, scale))
        return out[:, 1:] * am
