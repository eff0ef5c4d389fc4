"""``PatchTransformer``: a compact decoder-only patch transformer in the spirit of Timer-XL
(Liu et al., "Timer-XL: Long-Context Transformers for Unified Time Series Forecasting", ICLR 2025).

- A series is cut into patches of P points; each patch is a token, embedded linearly.
- Pre-norm decoder blocks: causal multi-head attention with rotary positions (Su et al. 2021,
  RoFormer: q, k rotated by angle pos * base^(-2i/d_head)), then a GELU MLP.
- A linear head maps token t to a prediction of patch t + 1 (next-token prediction on patches).
- Channel-independent: every channel of every window is its own series (batch row).
- ``instance_norm``: RevIN without affine (Kim et al., ICLR 2022), the mean and std of the
  context window; callers apply it to the whole rollout and undo it at the end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data import PATCH

__all__ = ["TSConfig", "scaled_config", "Attention", "MLP", "Block", "PatchTransformer",
           "instance_norm"]


@dataclass(frozen=True)
class TSConfig:
    """Sizes of a ``PatchTransformer``; ``scale`` records the width factor it was built with."""

    patch: int = PATCH
    d_model: int = 256
    n_heads: int = 8
    d_ff: int = 512
    n_layers: int = 1
    max_patches: int = 32
    rope_base: float = 10000.0
    scale: float = 1.0

    def __post_init__(self):
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model={self.d_model} must split into n_heads={self.n_heads} heads of even size (RoPE pairs)")


def scaled_config(scale: float, base: TSConfig | None = None) -> TSConfig:
    """Width scaling as in seed 001: heads ~ round(scale * heads), an even head size ~ the
    scaled width per head (>= 4), d_ff ~ scale * d_ff (>= 4); depth unchanged."""
    base = base or TSConfig()
    if not 0 < scale <= 4:
        raise ValueError(f"scale must be in (0, 4]; got {scale}")
    heads = max(1, round(base.n_heads * scale))
    head_dim = max(4, 2 * round(base.d_model * scale / heads / 2))
    return dataclasses.replace(base, d_model=heads * head_dim, n_heads=heads,
                               d_ff=max(4, round(base.d_ff * scale)), scale=scale)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x1, x2) of the head dimension by the position angle (rotate-half form)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    """Causal multi-head self-attention over patch tokens with rotary positions."""

    def __init__(self, cfg: TSConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        inv = cfg.rope_base ** (-torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim)
        ang = torch.outer(torch.arange(cfg.max_patches, dtype=torch.float64), inv)  # (max_patches, head_dim/2)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, d) -> (B, N, d)
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # each (B, H, N, hd)
        cos, sin = self.cos[:n], self.sin[:n]
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, N, hd)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    """Position-wise feed-forward: Linear -> GELU -> Linear."""

    def __init__(self, cfg: TSConfig):
        super().__init__()
        self.up, self.down = nn.Linear(cfg.d_model, cfg.d_ff), nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm decoder block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, cfg: TSConfig):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.norm2, self.mlp = nn.LayerNorm(cfg.d_model), MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchTransformer(nn.Module):
    """Decoder-only patch transformer: (B, N, P) normalised patches -> (B, N, P), where output
    token t predicts patch t + 1 (causal: it only sees patches 0..t)."""

    def __init__(self, cfg: TSConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.patch, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.patch)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if patches.ndim != 3 or patches.shape[-1] != self.cfg.patch:
            raise ValueError(f"expected (batch, n_patches, {self.cfg.patch}); got {tuple(patches.shape)}")
        if patches.shape[1] > self.cfg.max_patches:
            raise ValueError(f"{patches.shape[1]} patches exceed max_patches={self.cfg.max_patches}; shorten context + horizon")
        x = self.embed(patches)  # (B, N, d)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # (B, N, P)




def instance_norm(context: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RevIN without affine: (B, T) -> normalised (B, T), mean (B, 1), std (B, 1)."""
    mean = context.mean(1, keepdim=True)
    std = torch.sqrt(context.var(1, keepdim=True, unbiased=False) + eps)
    return (context - mean) / std, mean, std
