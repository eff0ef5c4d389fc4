"""``PatchTransformer``: a compact decoder-only patch transformer in the spirit of Timer-XL
(Liu et al., "Timer-XL: Long-Context Transformers for Unified Time Series Forecasting", ICLR 2025).

- A series is cut into patches of P points; each patch is a token, embedded linearly.
- Pre-norm decoder blocks: causal multi-head attention with rotary positions (Su et al. 2021,
  RoFormer: q, k rotated by angle pos * base^(-2i/d_head)), then a GELU MLP.
- A linear head maps token t to a prediction of patch t + 1 (next-token prediction on patches).
- ``PatchEnsemble``: the mean of several members' next-patch predictions (a deep ensemble).
- ``KVCache`` / ``new_cache``: keys and values per slot, so that a rollout feeds one new patch per
  step at its own slot (rows of a batch may sit at different slots).
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

__all__ = ["TSConfig", "scaled_config", "Attention", "MLP", "Block", "PatchTransformer", "PatchEnsemble", "KVCache",
           "EnsembleCache", "new_cache",
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
    dropout: float = 0.0  # on attention output and MLP output while training (Vaswani et al. 2017, sec. 5.4)

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
        self.drop = nn.Dropout(cfg.dropout)
        inv = cfg.rope_base ** (-torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim)
        ang = torch.outer(torch.arange(cfg.max_patches, dtype=torch.float64), inv)  # (max_patches, head_dim/2)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:  # (B, N, d) -> (B, N, d)
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # each (B, H, N, hd)
        if kv is None:  # slots 0..N-1, causal
            cos, sin = self.cos[:n], self.sin[:n]
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, N, hd)
        else:  # the N patches sit at slots pos (B, N); keys and values of every slot live in the cache
            cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # (B, 1, N, hd)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            ck, cv = kv  # (B, H, S, hd) each
            idx = pos[:, None, :, None].expand(-1, self.n_heads, -1, self.head_dim)
            ck.scatter_(2, idx, k)
            cv.scatter_(2, idx, v)
            mask = torch.arange(ck.shape[2], device=x.device) <= pos[:, :, None]  # (B, N, S): slot s visible iff s <= pos
            y = F.scaled_dot_product_attention(q, ck, cv, attn_mask=mask[:, None])
        return self.drop(self.out(y.transpose(1, 2).reshape(b, n, d)))


class MLP(nn.Module):
    """Position-wise feed-forward: Linear -> GELU -> Linear."""

    def __init__(self, cfg: TSConfig):
        super().__init__()
        self.up, self.down = nn.Linear(cfg.d_model, cfg.d_ff), nn.Linear(cfg.d_ff, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    """Pre-norm decoder block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, cfg: TSConfig):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.norm2, self.mlp = nn.LayerNorm(cfg.d_model), MLP(cfg)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pos, kv)
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

    def forward(self, patches: torch.Tensor, pos: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """(B, N, P) -> (B, N, P). Without ``cache`` the patches are slots 0..N-1. With a ``cache``
        (``new_cache``) they sit at slots ``pos`` (B, N), their keys and values are written there,
        and each attends to every cached slot <= its own: one patch costs one patch, not the buffer
        (gpt-fast's ``input_pos``, with a position per row)."""
        if patches.ndim != 3 or patches.shape[-1] != self.cfg.patch:
            raise ValueError(f"expected (batch, n_patches, {self.cfg.patch}); got {tuple(patches.shape)}")
        last = patches.shape[1] if pos is None else int(pos.max()) + 1
        if last > self.cfg.max_patches:
            raise ValueError(f"{last} patches exceed max_patches={self.cfg.max_patches}; shorten context + horizon")
        if (pos is None) != (cache is None):
            raise ValueError("pass pos and cache together (slots of a cached rollout), or neither (slots 0..N-1)")
        x = self.embed(patches)  # (B, N, d)
        for i, block in enumerate(self.blocks):
            x = block(x, pos, None if cache is None else (cache.k[i], cache.v[i]))
        return self.head(self.norm(x))  # (B, N, P)


class PatchEnsemble(nn.Module):
    """A deep ensemble of ``PatchTransformer``s (Lakshminarayanan et al., NeurIPS 2017): the
    next-patch prediction is the members' mean, at every step of a rollout. Same call as a member
    (``forward(patches, pos, cache)``); ``cfg`` is the first member's (patch, max_patches)."""

    def __init__(self, members: list[PatchTransformer]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if len({(m.cfg.patch, m.cfg.max_patches) for m in members}) != 1:
            raise ValueError("ensemble members must share patch and max_patches")
        self.members = nn.ModuleList(members)
        self.cfg = members[0].cfg

    def forward(self, patches: torch.Tensor, pos: torch.Tensor | None = None, cache: "EnsembleCache | None" = None) -> torch.Tensor:
        parts = [None] * len(self.members) if cache is None else cache.parts
        return torch.stack([m(patches, pos, c) for m, c in zip(self.members, parts)]).mean(0)


@dataclass
class KVCache:
    """Keys and values of every block, each (B, H, S, head_dim), written in place at the slots fed."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]

    def select(self, rows: torch.Tensor) -> "KVCache":
        """The cache of a subset of rows (rows that finished leave the batch)."""
        return KVCache([t[rows] for t in self.k], [t[rows] for t in self.v])


@dataclass
class EnsembleCache:
    """One ``KVCache`` per member of a ``PatchEnsemble``."""

    parts: list[KVCache]

    def select(self, rows: torch.Tensor) -> "EnsembleCache":
        return EnsembleCache([p.select(rows) for p in self.parts])


def new_cache(model: PatchTransformer | PatchEnsemble, batch: int, slots: int,
              like: torch.Tensor | None = None) -> KVCache | EnsembleCache:
    """An empty cache for ``batch`` rows of ``slots`` patch slots, dtype and device of ``like``."""
    if isinstance(model, PatchEnsemble):
        return EnsembleCache([new_cache(m, batch, slots, like) for m in model.members])
    cfg = model.cfg
    shape = (batch, cfg.n_heads, slots, cfg.d_model // cfg.n_heads)
    kw = {} if like is None else {"dtype": like.dtype, "device": like.device}
    return KVCache([torch.zeros(shape, **kw) for _ in model.blocks], [torch.zeros(shape, **kw) for _ in model.blocks])




def instance_norm(context: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RevIN without affine: (B, T) -> normalised (B, T), mean (B, 1), std (B, 1)."""
    mean = context.mean(1, keepdim=True)
    std = torch.sqrt(context.var(1, keepdim=True, unbiased=False) + eps)
    return (context - mean) / std, mean, std
