"""Speculative forecasting with a compact Timer-XL-like patch transformer on ETTh1 (seeds 000, 001).

Data
- ETTh1 / ETTh2 (Zhou et al., "Informer", AAAI 2021; github.com/zhouhaoyi/ETDataset, folder
  ETT-small, CC BY-ND 4.0). ``locate_ett`` looks in a directory (argument, else the environment
  variable ``SPECNB_TS_DATA``, else ``../shared/data`` beside the checkout, else a user cache) and
  downloads from the ETDataset repository only when the file is nowhere local; the sha256 is
  verified either way. The files are never committed.
- ``split_ett``: the standard 12/4/4-month split of the Informer / Time-Series-Library code
  (train = rows [0, 8640), val = [8640 - context, 11520), test = [11520 - context, 14400)), each
  channel standardised with the mean and std of the train rows only. Metrics are reported on
  this scaled data, as the literature does.

Model (``PatchTransformer``), in the spirit of Timer-XL (Liu et al., ICLR 2025)
- A series is cut into patches of P = 96 points; each patch is a token, embedded linearly.
- Pre-norm decoder blocks: causal multi-head attention with rotary positions (Su et al. 2021,
  RoFormer: q, k rotated by angle pos * base^(-2i/d_head)), then a GELU MLP.
- A linear head maps token t to a prediction of patch t + 1 (next-token prediction on patches).
- Channel-independent: every channel of every window is its own series (batch row).
- Instance normalisation (RevIN without affine, Kim et al. ICLR 2022): mean and std of the
  context window, applied to the whole rollout and undone at the end.

Speculative forecasting (``speculative_forecast``; Leviathan et al. 2023 with patches as tokens)
- Decoding runs in a fixed-shape buffer of L = context/P + ceil(horizon/P) patch slots. Every
  forward sees the same shape, so, with causal attention, the prediction at slot t is bitwise
  independent of whatever sits in later slots (tested). Target-only decoding and speculative
  decoding call the same ``score`` on that buffer, which is why tolerance 0 reproduces
  target-only output exactly.
- Each iteration: the draft rolls out k patches autoregressively; the target scores all of them
  in ONE forward; draft patch j is accepted by a rule, patch by patch; the first rejected patch
  is replaced by the target's own prediction from that same forward; if all k are accepted the
  target's next prediction is a free bonus patch. So every iteration emits accepted + 1 patches.
- Rules, on the instance-normalised scale (units of the context's std):
  ``tolerance``: accept iff mse(draft, target) <= tol and |mean(draft - target)| <= bias
  (seed 001's mse_tol / bias idea); ``gaussian``: accept iff u < exp(-P * mse / (2 sigma^2)),
  u ~ U[0, 1) from a seeded generator, the likelihood ratio N(x_d; mu_t, sigma^2) /
  N(x_d; mu_d, sigma^2) at the draft's point forecast x_d = mu_d (Leviathan's accept step for
  Gaussian heads; the rejected patch is replaced by the target's mean, not a residual sample).
- Horizons that are not a multiple of P (336, 720) are rolled out to ceil(H/P) patches and cut,
  as Timer-XL's own test loop does.

Training: ``python -m specnb.timeseries train [NAME ...]`` trains the presets in ``MODELS``
(resumable: an atomic checkpoint after every epoch) and writes data/ts/NAME/model.safetensors
plus data/ts/NAME/train.json (config, data, schedule, losses, seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from .timing import benchmark_op, compare, summarize

from .paths import DATA, ROOT

__all__ = [
    "PATCH", "CONTEXT", "HORIZONS", "ETT_FILES", "DATA_ENV", "TS_DIR", "MODELS",
    "sha256_of", "fetch_url", "locate_ett", "load_ett", "split_ett", "make_windows",
    "TSConfig", "scaled_config", "PatchTransformer", "count_params",
    "Forecast", "instance_norm", "score", "target_forecast", "speculative_forecast",
    "evaluate", "component_times", "time_interleaved", "summarize_times", "timing_batch", "speed_methods",
    "scaling_table",
    "train", "save_model", "load_model", "main",
]

PATCH = 96  # points per patch (token), Timer-XL's input_token_len on ETTh1
CONTEXT = 672  # look-back window in points = 7 patches (Timer-XL's seq_len on ETTh1)
HORIZONS = (96, 192, 336, 720)
MONTH = 30 * 24  # hourly rows per "month" in the Informer split
DATA_ENV = "SPECNB_TS_DATA"
TS_DIR = DATA / "ts"
SHARED_DATA = ROOT.parent / "shared" / "data"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "specnb" / "ett"
_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{name}.csv"
ETT_FILES = {
    "ETTh1": "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
    "ETTh2": "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_url(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` atomically (raises OSError when offline)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            out.write(resp.read())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_sha(path: Path, name: str) -> Path:
    got, want = sha256_of(path), ETT_FILES[name]
    if got != want:
        raise ValueError(f"{path} has sha256 {got}, expected {want} for the ETDataset {name}.csv; "
                         f"replace it with the unmodified file from {_URL.format(name=name)}")
    return path


def locate_ett(name: str = "ETTh1", directory: str | Path | None = None) -> Path:
    """Path to a verified NAME.csv: from ``directory``, else ``$SPECNB_TS_DATA``, else
    ../shared/data beside the checkout, else the user cache, else downloaded into that cache."""
    if name not in ETT_FILES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(ETT_FILES)}")
    candidates = [Path(d).expanduser() for d in (directory, os.environ.get(DATA_ENV)) if d]
    candidates += [SHARED_DATA, CACHE_DIR]
    for folder in candidates:
        if (folder / f"{name}.csv").is_file():
            return _check_sha(folder / f"{name}.csv", name)
    dest = CACHE_DIR / f"{name}.csv"
    try:
        fetch_url(_URL.format(name=name), dest)
    except OSError as exc:
        raise FileNotFoundError(
            f"{name}.csv is not in {', '.join(map(str, candidates))} and could not be downloaded ({exc}); "
            f"set {DATA_ENV} to a folder holding {name}.csv (sha256 {ETT_FILES[name]}) "
            f"or pass directory=..."
        ) from exc
    return _check_sha(dest, name)


def load_ett(name: str = "ETTh1", directory: str | Path | None = None) -> pd.DataFrame:
    """The verified ETT table: columns date, HUFL, HULL, MUFL, MULL, LUFL, LULL, OT."""
    return pd.read_csv(locate_ett(name, directory), parse_dates=["date"])


def split_ett(frame: pd.DataFrame, context: int = CONTEXT) -> dict:
    """Standard ETT split (12/4/4 months), standardised with train statistics.

    Returns {"train", "val", "test"}: float32 arrays (rows, channels); val and test start
    ``context`` rows before their boundary so their first window forecasts the boundary row;
    plus "mean", "std" (per channel) and "columns"."""
    values = frame.drop(columns=["date"], errors="ignore").to_numpy(np.float64)
    ends = (12 * MONTH, 16 * MONTH, 20 * MONTH)
    if context < 1 or context > ends[0]:
        raise ValueError(f"context must be in 1..{ends[0]} rows; got {context}")
    if len(values) < ends[2]:
        raise ValueError(f"an ETT hourly table needs >= {ends[2]} rows for the 12/4/4-month split; got {len(values)}")
    mean, std = values[: ends[0]].mean(0), values[: ends[0]].std(0)  # StandardScaler: population std
    scaled = ((values - mean) / std).astype(np.float32)
    return {
        "train": scaled[: ends[0]],
        "val": scaled[ends[0] - context: ends[1]],
        "test": scaled[ends[1] - context: ends[2]],
        "mean": mean, "std": std,
        "columns": [c for c in frame.columns if c != "date"],
    }


def make_windows(series: np.ndarray, length: int, stride: int = 1) -> torch.Tensor:
    """Channel-independent windows: (rows, C) -> (n_windows * C, length), window-major."""
    if series.ndim != 2 or len(series) < length:
        raise ValueError(f"need a (rows, channels) array with rows >= {length}; got shape {series.shape}")
    x = torch.from_numpy(np.ascontiguousarray(series.T))  # (C, rows)
    w = x.unfold(1, length, stride)  # (C, n, length)
    return w.transpose(0, 1).reshape(-1, length).contiguous()


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


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


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Forecasting: target-only and speculative
# --------------------------------------------------------------------------------------------


@dataclass
class Forecast:
    """A batch of forecasts (B, horizon) on the scaled data, with decoding statistics."""

    values: torch.Tensor
    target_calls: int
    draft_calls: int = 0
    proposed: int = 0  # draft patches offered for verification (summed over rows)
    accepted: int = 0  # of which accepted
    emitted: int = 0  # patches written (summed over rows)

    @property
    def acceptance_rate(self) -> float:
        """alpha = accepted / proposed draft patches (NaN when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else float("nan")

    def summary(self) -> dict:
        """Decoding statistics, one row of a timing table (``specnb.timing.compare``)."""
        return {"target_calls": self.target_calls, "draft_calls": self.draft_calls, "acceptance": self.acceptance_rate}


def instance_norm(context: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RevIN without affine: (B, T) -> normalised (B, T), mean (B, 1), std (B, 1)."""
    mean = context.mean(1, keepdim=True)
    std = torch.sqrt(context.var(1, keepdim=True, unbiased=False) + eps)
    return (context - mean) / std, mean, std


def _check_inputs(model: PatchTransformer, context: torch.Tensor, horizon: int) -> tuple[int, int]:
    p = model.cfg.patch
    if context.ndim != 2:
        raise ValueError(f"context must be (batch, points); got shape {tuple(context.shape)}")
    if context.shape[1] < p or context.shape[1] % p:
        raise ValueError(f"context length {context.shape[1]} must be a positive multiple of the patch length {p}; "
                         f"trim it to {max(p, context.shape[1] // p * p)} points")
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be a positive number of points; got {horizon}")
    n_ctx, n_new = context.shape[1] // p, math.ceil(horizon / p)
    if n_ctx + n_new > model.cfg.max_patches:
        raise ValueError(f"context + horizon = {n_ctx + n_new} patches exceed the model's max_patches="
                         f"{model.cfg.max_patches}; shorten the context or the horizon")
    return n_ctx, n_new


def _buffer(context: torch.Tensor, n_new: int, patch: int):
    """Fixed-shape decoding buffer (B, n_ctx + n_new, P), zeros after the context; mean, std."""
    z, mean, std = instance_norm(context)
    b = context.shape[0]
    buf = torch.zeros(b, z.shape[1] // patch + n_new, patch, dtype=context.dtype, device=context.device)
    buf[:, : z.shape[1] // patch] = z.view(b, -1, patch)
    return buf, mean, std


def _finish(buf: torch.Tensor, n_ctx: int, horizon: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """De-normalise the generated slots and cut to the horizon: (B, horizon)."""
    out = buf[:, n_ctx:].reshape(buf.shape[0], -1)[:, :horizon]
    return out * std + mean


@torch.inference_mode()
def score(model: PatchTransformer, buf: torch.Tensor) -> torch.Tensor:
    """One forward over the whole buffer: (B, L, P) -> (B, L, P) next-patch predictions. The
    single scoring function of both decoding paths."""
    return model(buf)


@torch.inference_mode()
def target_forecast(model: PatchTransformer, context: torch.Tensor, horizon: int) -> Forecast:
    """Target-only autoregressive rollout: one forward per patch, in the fixed-shape buffer."""
    n_ctx, n_new = _check_inputs(model, context, horizon)
    buf, mean, std = _buffer(context, n_new, model.cfg.patch)
    for pos in range(n_ctx, n_ctx + n_new):
        buf[:, pos] = score(model, buf)[:, pos - 1]
    return Forecast(_finish(buf, n_ctx, horizon, mean, std), target_calls=n_new, emitted=n_new * len(buf))


def _accept(draft: torch.Tensor, target: torch.Tensor, rule: str, tol: float, bias: float, sigma: float,
            gen: torch.Generator) -> torch.Tensor:
    """Per-patch acceptance, (B, k, P) x 2 -> (B, k) bool (see the module docstring)."""
    diff = draft - target
    mse = diff.pow(2).mean(-1)  # (B, k), units of the context variance
    if rule == "tolerance":
        return (mse <= tol) & (diff.mean(-1).abs() <= bias)
    ratio = torch.exp(-draft.shape[-1] * mse / (2 * sigma**2)) if sigma > 0 else (mse == 0).to(mse.dtype)
    u = torch.rand(mse.shape, generator=gen, dtype=mse.dtype)
    return u < ratio


def _check_rule(rule: str, k: int, tol: float, bias: float, sigma: float) -> None:
    if rule not in ("tolerance", "gaussian"):
        raise ValueError(f"unknown rule {rule!r}; use 'tolerance' (mse_tol, bias) or 'gaussian' (sigma)")
    if int(k) != k or k < 1:
        raise ValueError(f"k (draft patches per iteration) must be an integer >= 1; got {k}")
    if tol < 0 or bias < 0 or sigma < 0:
        raise ValueError(f"tol, bias and sigma must be >= 0; got tol={tol}, bias={bias}, sigma={sigma}")


@torch.inference_mode()
def speculative_forecast(target: PatchTransformer, draft: PatchTransformer, context: torch.Tensor, horizon: int,
                         k: int = 3, rule: str = "tolerance", tol: float = 0.1, bias: float = math.inf,
                         sigma: float = 0.3, seed: int = 0) -> Forecast:
    """Speculative rollout (module docstring): the draft proposes up to k patches per iteration,
    the target scores them in one forward, accepted patches are kept, the first rejected one is
    replaced by the target's prediction. Rows advance independently. Deterministic given seed."""
    _check_rule(rule, k, tol, bias, sigma)
    n_ctx, n_new = _check_inputs(target, context, horizon)
    if draft.cfg.patch != target.cfg.patch:
        raise ValueError(f"draft patch {draft.cfg.patch} != target patch {target.cfg.patch}; train the draft with the target's patch length")
    buf, mean, std = _buffer(context, n_new, target.cfg.patch)
    size, rows = buf.shape[1], torch.arange(len(buf))
    n = torch.full((len(buf),), n_ctx, dtype=torch.long)  # filled slots per row
    gen = torch.Generator().manual_seed(seed)
    out = Forecast(buf, target_calls=0)
    while bool((n < size).any()):
        kb = (size - n - 1).clamp(min=0, max=k)  # draft patches per row: leave the last slot to the target
        kmax = int(kb.max())
        for j in range(kmax):  # draft rollout, written into the buffer
            pos = (n + j).clamp(max=size - 1)
            pred = score(draft, buf)[rows, pos - 1]
            live = j < kb
            buf[rows[live], pos[live]] = pred[live]
        out.draft_calls += kmax
        tpred = score(target, buf)  # ONE target forward scores every proposal
        out.target_calls += 1
        offs = torch.arange(kmax + 1)
        idx = (n[:, None] - 1 + offs).clamp(max=size - 1)  # (B, kmax + 1) predicting slots n .. n + kmax
        t_next = tpred[rows[:, None], idx]  # (B, kmax + 1, P)
        props = buf[rows[:, None], (idx + 1).clamp(max=size - 1)][:, :kmax]  # (B, kmax, P)
        ok = _accept(props, t_next[:, :kmax], rule, tol, bias, sigma, gen) & (offs[:kmax] < kb[:, None])
        a = ok.to(torch.long).cumprod(1).sum(1)  # accepted prefix per row
        live = n < size
        fix = (n + a).clamp(max=size - 1)
        buf[rows[live], fix[live]] = t_next[rows, a][live]  # replacement (or bonus) from the target
        out.proposed += int(kb[live].sum())
        out.accepted += int(a[live].sum())
        out.emitted += int((a + 1)[live].sum())
        n = torch.where(live, n + a + 1, n)
    out.values = _finish(buf, n_ctx, horizon, mean, std)
    return out


# --------------------------------------------------------------------------------------------
# Evaluation and timing
# --------------------------------------------------------------------------------------------


def evaluate(target: PatchTransformer, series: np.ndarray, horizon: int, *, draft: PatchTransformer | None = None,
             context: int = CONTEXT, stride: int = 1, batch_size: int = 2048, progress: bool = False,
             **spec) -> dict:
    """MSE / MAE on every ``stride``-th window of ``series`` (scaled), all channels; speculative
    when ``draft`` is given (``spec`` = k, rule, tol, bias, sigma, seed), else target-only."""
    windows = make_windows(series, context + horizon, stride)  # (n * C, context + horizon)
    se = ae = 0.0
    stats = dict(target_calls=0, draft_calls=0, proposed=0, accepted=0, emitted=0)
    chunks = list(torch.split(windows, batch_size))
    for chunk in tqdm(chunks, desc=f"H={horizon}", disable=not progress, leave=False):
        ctx, truth = chunk[:, :context], chunk[:, context:]
        fc = speculative_forecast(target, draft, ctx, horizon, **spec) if draft is not None else target_forecast(target, ctx, horizon)
        se += float((fc.values - truth).pow(2).sum())
        ae += float((fc.values - truth).abs().sum())
        for key in stats:
            stats[key] += getattr(fc, key)
    count = windows.shape[0] * horizon
    alpha = stats["accepted"] / stats["proposed"] if stats["proposed"] else float("nan")
    return {"horizon": horizon, "series": windows.shape[0], "mse": se / count, "mae": ae / count,
            "acceptance": alpha, **stats}


def _capture(model: PatchTransformer, x: torch.Tensor) -> dict[str, list[tuple[nn.Module, torch.Tensor]]]:
    """Inputs seen by each component during one forward, grouped as in seed 000's table."""
    groups = {"embedding": [model.embed], "attention": [b.attn for b in model.blocks], "mlp": [b.mlp for b in model.blocks],
              "norms": [m for b in model.blocks for m in (b.norm1, b.norm2)] + [model.norm], "head": [model.head]}
    seen: dict[str, list] = {g: [] for g in groups}
    hooks = [m.register_forward_hook(lambda mod, inp, _o, g=g: seen[g].append((mod, inp[0])))
             for g, mods in groups.items() for m in mods]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def component_times(model: PatchTransformer, context: torch.Tensor, min_run_time: float = 0.2) -> dict:
    """Seed 000's per-batch breakdown on a (B, T) context batch: the whole forward (instance norm,
    model, de-norm of the next patch) and each component on the inputs it sees, timed with
    torch.utils.benchmark (warm-up, median over blocked runs). Seconds per batch."""
    z, mean, std = instance_norm(context)
    x = z.view(len(z), -1, model.cfg.patch)

    @torch.inference_mode()
    def forward():
        zz, m, s = instance_norm(context)
        return model(zz.view(len(zz), -1, model.cfg.patch))[:, -1] * s + m

    seen = _capture(model, x)
    total = _bench(forward, min_run_time)
    row = {"total": total["median_s"], "total_iqr": total["iqr_s"]}
    for group, calls in seen.items():
        row[group] = _bench(_replay(calls), min_run_time)["median_s"]
    row["norms"] += _bench(lambda: instance_norm(context), min_run_time)["median_s"]
    return row


def _replay(calls: list[tuple[nn.Module, torch.Tensor]]) -> Callable[[], None]:
    @torch.inference_mode()
    def run():
        for mod, inp in calls:
            mod(inp)
    return run


def _bench(fn: Callable[[], object], min_run_time: float) -> dict:
    return benchmark_op(fn, min_run_time=min_run_time, warmup=2)


def time_interleaved(methods: Mapping[str, Callable[[], Forecast]], repeats: int = 5, warmup: int = 1,
                     progress: bool = True) -> pd.DataFrame:
    """Wall-clock of each method, ``repeats`` rounds interleaved and rotated (A B C, B C A, ...)
    after ``warmup`` untimed rounds (``specnb.timing.compare``): one row per (method, repeat)."""
    return compare(methods, repeats=repeats, warmup=warmup, progress=progress)


def summarize_times(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per method: median and quartiles of seconds, and the median paired speedup
    t_baseline / t_method over repeats (``specnb.timing.summarize``; pairing cancels drift)."""
    table = summarize(runs, baseline, metric="seconds", higher_is_better=False)
    stats = runs.groupby("method", sort=False)[["target_calls", "draft_calls", "acceptance"]].median()
    table = table.rename(columns={f"ratio_vs_{baseline}": "speedup", "ratio_q25": "speedup_q25", "ratio_q75": "speedup_q75"})
    return table[["method", "repeats", "seconds_median", "seconds_q25", "seconds_q75", "speedup", "speedup_q25",
                  "speedup_q75"]].merge(stats, left_on="method", right_index=True)


def timing_batch(series: np.ndarray, n_windows: int, context: int = CONTEXT, horizon: int = max(HORIZONS)) -> torch.Tensor:
    """Contexts of ``n_windows`` evenly spaced windows, all channels: (n_windows * C, context);
    seed 000's batch of 32 windows is 224 series on ETTh1's 7 channels."""
    starts = np.linspace(0, len(series) - context - horizon, n_windows).round().astype(int)
    x = torch.from_numpy(np.stack([series[s: s + context].T for s in starts]))  # (n, C, context)
    return x.reshape(-1, context).contiguous()


def speed_methods(target: PatchTransformer, context: torch.Tensor, horizon: int,
                  variants: Mapping[str, tuple[PatchTransformer, Mapping]]) -> dict[str, Callable[[], Forecast]]:
    """Callables for ``time_interleaved``: "target-only" plus one speculative run per
    name -> (draft, speculative_forecast keyword arguments)."""
    methods = {"target-only": lambda: target_forecast(target, context, horizon)}
    for name, (draft, kw) in variants.items():
        methods[name] = lambda d=draft, kw=dict(kw): speculative_forecast(target, d, context, horizon, **kw)
    return methods


def horizon_table(target: PatchTransformer, draft: PatchTransformer, series: np.ndarray, batch: torch.Tensor,
                  horizons=HORIZONS, *, stride: int = 24, repeats: int = 5, context: int = CONTEXT, **spec) -> pd.DataFrame:
    """Per horizon, target-only and speculative rows: quality on every ``stride``-th window of
    ``series`` (``evaluate``) and speed on ``batch`` (interleaved ``time_interleaved``, paired speedup)."""
    rows = []
    for h in horizons:
        quality = {"target-only": evaluate(target, series, h, stride=stride, context=context),
                   "speculative": evaluate(target, series, h, draft=draft, stride=stride, context=context, **spec)}
        runs = time_interleaved(speed_methods(target, batch, h, {"speculative": (draft, spec)}), repeats=repeats)
        speed = summarize_times(runs, "target-only").set_index("method").drop(columns=["acceptance"])
        rows += [{**quality[m], "method": m, **speed.loc[m].to_dict()} for m in ("target-only", "speculative")]
    return pd.DataFrame(rows)


def tradeoff_table(target: PatchTransformer, draft: PatchTransformer, series: np.ndarray, batch: torch.Tensor,
                   tols, *, horizon: int = 720, k: int = 3, stride: int = 24, repeats: int = 5,
                   context: int = CONTEXT) -> pd.DataFrame:
    """The tolerance dial: per tolerance, acceptance and MSE/MAE (``evaluate``) and the paired
    speedup over target-only, all tolerances timed in one interleaved run."""
    variants = {f"tol={t:g}": (draft, dict(k=k, rule="tolerance", tol=t)) for t in tols}
    quality = [{"method": n, "tol": kw["tol"], **evaluate(target, series, horizon, draft=d, stride=stride, context=context, **kw)}
               for n, (d, kw) in variants.items()]
    runs = time_interleaved(speed_methods(target, batch, horizon, variants), repeats=repeats)
    speed = summarize_times(runs, "target-only").drop(columns=["acceptance", "target_calls", "draft_calls"])
    return pd.DataFrame(quality).merge(speed, on="method")


def progression_table(target: PatchTransformer, stages: Mapping[str, PatchTransformer], series: np.ndarray,
                      seed_rows: Mapping[str, tuple], *, stride: int = 24, alone_horizon: int = 96,
                      spec_horizon: int = 720, context: int = CONTEXT, **spec) -> pd.DataFrame:
    """Seed 001's progression: per stage, the draft alone as a forecaster at H = ``alone_horizon``
    (MSE, MAE) and its acceptance (and speculative MSE) at H = ``spec_horizon`` with ``spec``; ``seed_rows`` maps a stage (and
    "target") to seed 001's (MSE, MAE[, acceptance]), shown beside ours. The target closes the table."""
    rows = []
    for stage, model in stages.items():
        alone = evaluate(model, series, alone_horizon, stride=stride, context=context)
        spec720 = evaluate(target, series, spec_horizon, draft=model, stride=stride, context=context, **spec)
        seed = tuple(seed_rows.get(stage, ())) + (float("nan"),) * 3
        rows.append({"stage": stage, "mse": alone["mse"], "mae": alone["mae"], "acceptance": spec720["acceptance"],
                     "spec_mse_720": spec720["mse"], "seed_mse": seed[0], "seed_mae": seed[1], "seed_acceptance": seed[2]})
    alone = evaluate(target, series, alone_horizon, stride=stride, context=context)
    seed = tuple(seed_rows.get("target", ())) + (float("nan"),) * 3
    rows.append({"stage": "target", "mse": alone["mse"], "mae": alone["mae"], "seed_mse": seed[0], "seed_mae": seed[1]})
    return pd.DataFrame(rows)


def scaling_table(models: Mapping[str, PatchTransformer], context: torch.Tensor, baseline: str = "target",
                  min_run_time: float = 0.2, progress: bool = True) -> pd.DataFrame:
    """Seed 000's table: sizes, per-batch forward ms, speedup vs ``baseline`` and the component
    breakdown (ms and speedup per component) for every model on one context batch."""
    rows = []
    for name, model in tqdm(models.items(), desc="component timing", disable=not progress, leave=False):
        t = component_times(model, context, min_run_time)
        cfg = model.cfg
        rows.append({"model": name, "scale": cfg.scale, "d_model": cfg.d_model, "n_heads": cfg.n_heads, "d_ff": cfg.d_ff,
                     "params": count_params(model), "batch_series": len(context),
                     **{f"{k}_ms": v * 1e3 for k, v in t.items()}})
    table = pd.DataFrame(rows)
    base = table.set_index("model").loc[baseline]
    for col in ("total", "attention", "mlp", "norms", "embedding", "head"):
        table[f"{col}_speedup"] = base[f"{col}_ms"] / table[f"{col}_ms"]
    return table


# --------------------------------------------------------------------------------------------
# Training, saving, loading
# --------------------------------------------------------------------------------------------

# name -> (width scale, dataset, init from, epochs, learning rate). Seed 001's progression: 0.7x on
# ETTh1 only vs 0.7x pre-trained on ETTh2 (our offline "larger dataset") then fine-tuned on ETTh1
# at half the learning rate.
MODELS: dict[str, dict] = {
    "target": dict(scale=1.0, dataset="ETTh1", epochs=5, lr=1e-3),
    "draft_0.7x": dict(scale=0.7, dataset="ETTh1", epochs=5, lr=1e-3),
    "draft_0.5x": dict(scale=0.5, dataset="ETTh1", epochs=5, lr=1e-3),
    "draft_0.25x": dict(scale=0.25, dataset="ETTh1", epochs=5, lr=1e-3),
    "draft_0.01x": dict(scale=0.01, dataset="ETTh1", epochs=3, lr=3e-3),
    "draft_0.7x_etth2": dict(scale=0.7, dataset="ETTh2", epochs=5, lr=1e-3),
    "draft_0.7x_ft": dict(scale=0.7, dataset="ETTh1", epochs=3, lr=5e-4, init="draft_0.7x_etth2"),
}
for _preset in MODELS.values():
    _preset.setdefault("steps_per_epoch", 100)  # 100 x 128 random windows per epoch: CPU-sized
TRAIN_PATCHES = CONTEXT // PATCH + math.ceil(max(HORIZONS) / PATCH)  # 7 + 8 = 15 patches per training window


def _loss(model: PatchTransformer, windows: torch.Tensor, from_token: int = 0) -> torch.Tensor:
    """Next-patch MSE on the scaled data (de-normalised), windows (B, T); instance norm from the
    first CONTEXT points. Predictions of tokens >= ``from_token`` count."""
    p = model.cfg.patch
    ctx = windows[:, : min(CONTEXT, windows.shape[1] - p)]
    _, mean, std = instance_norm(ctx)
    z = ((windows - mean) / std).view(len(windows), -1, p)  # (B, N, P)
    pred = model(z[:, :-1])[:, from_token:] * std[:, :, None] + mean[:, :, None]
    truth = windows.view(len(windows), -1, p)[:, 1 + from_token:]
    return F.mse_loss(pred, truth)


def save_model(model: PatchTransformer, directory: str | Path, meta: Mapping) -> None:
    """model.safetensors (weights) and train.json (config + ``meta``), each written atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, directory / "model.safetensors")
    info = {"config": dataclasses.asdict(model.cfg), "params": count_params(model), **meta}
    tmp = directory / ".train.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, directory / "train.json")


def load_model(name: str, directory: str | Path | None = None) -> tuple[PatchTransformer, dict]:
    """(model in eval mode, train.json) from data/ts/NAME (or ``directory``/NAME)."""
    folder = Path(directory or TS_DIR) / name
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no weights in {folder}; train them with: python -m specnb.timeseries train {name}")
    info = json.loads((folder / "train.json").read_text())
    model = PatchTransformer(TSConfig(**info["config"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), info


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(name: str, *, scale: float = 1.0, dataset: str = "ETTh1", epochs: int = 6, lr: float = 1e-3,
          init: str | None = None, batch_size: int = 128, seed: int = 0, steps_per_epoch: int | None = None,
          base: TSConfig | None = None, directory: str | Path | None = None, data_dir: str | Path | None = None,
          progress: bool = True) -> dict:
    """Train (or resume) model NAME: AdamW, cosine schedule, next-patch MSE over 15-patch windows
    of the train split, best epoch by validation loss (forecast tokens only). A checkpoint is
    saved atomically after every epoch and removed when done. Returns the train.json dict."""
    folder = Path(directory or TS_DIR) / name
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "checkpoint.pt"
    torch.manual_seed(seed)
    split = split_ett(load_ett(dataset, data_dir))
    length = TRAIN_PATCHES * PATCH
    train_w = make_windows(split["train"], length)  # (n * C, 1440)
    val_w = make_windows(split["val"], length, stride=8)
    if init:
        model, _ = load_model(init, directory)
        model.train()
    else:
        model = PatchTransformer(scaled_config(scale, base)).train()
    steps = steps_per_epoch or math.ceil(len(train_w) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    state = {"epoch": 0, "history": [], "best": math.inf, "best_state": None, "seconds": 0.0}
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        model.load_state_dict(saved["model"]), opt.load_state_dict(saved["opt"]), sched.load_state_dict(saved["sched"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
    for epoch in range(state["epoch"], epochs):
        start = time.perf_counter()
        order = torch.randperm(len(train_w))[: steps * batch_size]
        total = 0.0
        for i in tqdm(range(steps), desc=f"{name} epoch {epoch + 1}/{epochs}", disable=not progress, leave=False):
            loss = _loss(model, train_w[order[i * batch_size:(i + 1) * batch_size]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            val = float(np.mean([float(_loss(model, w, CONTEXT // PATCH - 1)) for w in torch.split(val_w, 1024)]))
        model.train()
        state["history"].append({"epoch": epoch + 1, "train_loss": total / steps, "val_loss": val})
        if val < state["best"]:
            state["best"], state["best_state"] = val, {k: v.clone() for k, v in model.state_dict().items()}
        state["epoch"], state["seconds"] = epoch + 1, state["seconds"] + time.perf_counter() - start
        _save_checkpoint(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                "rng": torch.get_rng_state(), "state": state})
        if progress:
            print(f"{name}: epoch {epoch + 1}/{epochs} train {total / steps:.4f} val {val:.4f}", flush=True)
    model.load_state_dict(state["best_state"])
    meta = {"name": name, "dataset": dataset, "init": init, "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "steps_per_epoch": steps, "seed": seed, "train_windows": len(train_w), "window_points": length,
            "best_val_loss": state["best"], "history": state["history"], "train_seconds": round(state["seconds"], 1),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    save_model(model.eval(), folder, meta)
    ckpt.unlink(missing_ok=True)
    return json.loads((folder / "train.json").read_text())


def main(argv: list[str] | None = None) -> int:
    """``python -m specnb.timeseries train [NAME ...] [--force]``: train the presets in MODELS
    (all by default, in order, skipping finished ones unless --force)."""
    parser = argparse.ArgumentParser(prog="python -m specnb.timeseries", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train (or resume) the preset models into data/ts/")
    tr.add_argument("names", nargs="*", help=f"presets (default: all): {', '.join(MODELS)}")
    tr.add_argument("--force", action="store_true", help="retrain even if weights exist")
    tr.add_argument("--data", default=None, help=f"folder with ETTh1.csv / ETTh2.csv (default ${DATA_ENV})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {list(MODELS)}")
    for name in args.names or list(MODELS):
        if (TS_DIR / name / "model.safetensors").exists() and not args.force:
            print(f"{name}: weights exist, skipping (use --force to retrain)")
            continue
        info = train(name, data_dir=args.data, **MODELS[name])
        print(f"{name}: {info['params']:,} params, best val {info['best_val_loss']:.4f}, {info['train_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
