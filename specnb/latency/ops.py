"""Operator microbenchmarks, the fixed-cost fit and dispatched-operator counts.

- ``benchmark_ops``: microbenchmarks of decoder-step operators over sizes (``torch.utils.benchmark``
  through ``specnb.timing.benchmark_op``).
- ``fit_fixed_cost``: per operator, fit ``t = t0 + work / throughput`` (non-negative least squares),
  and the size where useful work first costs as much as ``t0`` (the crossover).
- ``operator_counts`` / ``count_operators``: aten operators one forward actually dispatches.

Shapes are batch 1 throughout. "work" is FLOPs for matmul-like operators and elements for the rest
(column ``unit``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

from ..generate.forward import crop, forward, new_cache
from ..timing import benchmark_op

__all__ = ["SDPA_HEADS", "SDPA_HEAD_DIM", "EMBEDDING_ROWS", "OPS", "DEFAULT_OPS", "benchmark_ops",
           "fit_fixed_cost", "operator_counts", "count_operators"]

SDPA_HEADS = 8  # sdpa microbenchmark: 8 heads of width 64, 1 query, n cached keys
SDPA_HEAD_DIM = 64
EMBEDDING_ROWS = 128  # rows of the embedding table in the lookup benchmark (cost does not depend on it)


# --------------------------------------------------------------------------------------------
# Operator microbenchmarks
# --------------------------------------------------------------------------------------------


def _linear(n, device, dtype):
    x, w = torch.randn(1, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return (lambda: F.linear(x, w)), 2 * n * n  # (1, n) @ (n, n)^T: 2 n^2 FLOPs


def _matmul(n, device, dtype):
    x, w = torch.randn(1, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return (lambda: torch.matmul(x, w)), 2 * n * n  # (1, n) @ (n, n)


def _sdpa(n, device, dtype):
    h, d = SDPA_HEADS, SDPA_HEAD_DIM
    q = torch.randn(1, h, 1, d, device=device, dtype=dtype)  # (1, H, 1, d): one decode query
    k = torch.randn(1, h, n, d, device=device, dtype=dtype)  # (1, H, n, d): n cached keys
    v = torch.randn(1, h, n, d, device=device, dtype=dtype)
    return (lambda: F.scaled_dot_product_attention(q, k, v)), 4 * h * n * d  # QK^T and PV: 2 n d each


def _rms_norm(n, device, dtype):
    x, w = torch.randn(1, n, device=device, dtype=dtype), torch.ones(n, device=device, dtype=dtype)
    return (lambda: F.rms_norm(x, (n,), w, 1e-6)), n


def _layer_norm(n, device, dtype):
    x = torch.randn(1, n, device=device, dtype=dtype)
    w, b = torch.ones(n, device=device, dtype=dtype), torch.zeros(n, device=device, dtype=dtype)
    return (lambda: F.layer_norm(x, (n,), w, b, 1e-5)), n


def _softmax(n, device, dtype):
    x = torch.randn(1, n, device=device, dtype=dtype)
    return (lambda: torch.softmax(x, dim=-1)), n


def _add(n, device, dtype):
    x, y = torch.randn(1, n, device=device, dtype=dtype), torch.randn(1, n, device=device, dtype=dtype)
    return (lambda: x + y), n


def _mul(n, device, dtype):
    x, y = torch.randn(1, n, device=device, dtype=dtype), torch.randn(1, n, device=device, dtype=dtype)
    return (lambda: x * y), n


def _silu(n, device, dtype):
    x = torch.randn(1, n, device=device, dtype=dtype)
    return (lambda: F.silu(x)), n


def _embedding(n, device, dtype):
    w = torch.randn(EMBEDDING_ROWS, n, device=device, dtype=dtype)  # (rows, n)
    idx = torch.tensor([[3]], device=device)  # (1, 1): one token
    return (lambda: F.embedding(idx, w)), n  # one row of width n


# name -> (builder(n, device, dtype) -> (callable, work), unit of work)
OPS = {
    "linear": (_linear, "flops"),
    "matmul": (_matmul, "flops"),
    "sdpa": (_sdpa, "flops"),
    "rms_norm": (_rms_norm, "elements"),
    "layer_norm": (_layer_norm, "elements"),
    "softmax": (_softmax, "elements"),
    "add": (_add, "elements"),
    "mul": (_mul, "elements"),
    "silu": (_silu, "elements"),
    "embedding": (_embedding, "elements"),
}
DEFAULT_OPS = ("linear", "sdpa", "rms_norm", "layer_norm", "softmax", "add", "silu", "embedding")


def _check_ops(ops: Iterable[str]) -> list[str]:
    ops = [ops] if isinstance(ops, str) else list(ops)
    if not ops:
        raise ValueError("ops is empty")
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; choose from {sorted(OPS)}")
    return ops


def _check_sizes(sizes: Iterable[int]) -> list[int]:
    sizes = [int(s) for s in sizes]
    if not sizes:
        raise ValueError("sizes is empty")
    if min(sizes) < 1:
        raise ValueError(f"sizes must be >= 1; got {sizes}")
    return sizes


def benchmark_ops(
    sizes: Iterable[int],
    ops: Iterable[str] = DEFAULT_OPS,
    device: str | torch.device = "cpu",
    min_run_time: float = 0.1,
    dtype: torch.dtype = torch.float32,
) -> pd.DataFrame:
    """Median time of each operator at each size (batch 1, under ``inference_mode``).

    Size n means: linear/matmul (1, n) @ (n, n); sdpa 1 query over n cached keys, 8 heads of 64;
    norms, softmax, elementwise over (1, n); embedding one row of width n. Timed with
    ``specnb.timing.benchmark_op`` (warm-up, CUDA sync). One row per (op, size): op, size, work,
    unit, median_s, iqr_s, runs.
    """
    ops, sizes = _check_ops(ops), _check_sizes(sizes)
    if min_run_time <= 0:
        raise ValueError(f"min_run_time must be > 0; got {min_run_time}")
    device = torch.device(device)
    rows = []
    with torch.inference_mode():
        for op in ops:
            build, unit = OPS[op]
            for n in sizes:
                fn, work = build(n, device, dtype)
                m = benchmark_op(fn, label=f"{op}[{n}]", min_run_time=min_run_time)
                rows.append({"op": op, "size": n, "work": float(work), "unit": unit,
                             "median_s": m["median_s"], "iqr_s": m["iqr_s"], "runs": m["runs"]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Fixed-cost fit
# --------------------------------------------------------------------------------------------


def _fit_one(work: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(t0, seconds per unit of work) >= 0 minimising the RELATIVE error of t = t0 + c * work.

    Rows are weighted by 1/t so the small sizes, where t0 shows, are not drowned by the largest
    size's absolute residual (timing noise is roughly proportional to t)."""
    a = np.stack([np.ones_like(work), work], axis=1) / t[:, None]  # (rows, 2)
    (t0, c), _ = nnls(a, np.ones_like(t))
    return float(t0), float(c)


def _crossover(size: np.ndarray, work: np.ndarray, needed: float) -> tuple[float, float]:
    """(size where work first reaches ``needed`` on a power-law fit log work = a + b log size,
    smallest measured size whose work reaches it (NaN if none))."""
    reached = size[work >= needed]
    measured = float(reached.min()) if reached.size else float("nan")
    if not np.isfinite(needed):
        return float("inf"), measured
    if len(np.unique(size)) < 2:
        return measured, measured
    b, a = np.polyfit(np.log(size), np.log(work), 1)
    return float(np.exp((np.log(needed) - a) / b)) if b > 0 and needed > 0 else measured, measured


def fit_fixed_cost(df: pd.DataFrame) -> pd.DataFrame:
    """Per op, fit ``median_s = t0 + work / throughput`` with t0, 1/throughput >= 0 (``scipy.optimize.nnls``).

    Returns op, unit (if given), t0_s, throughput (work per second; inf if no size-dependent part
    was found), r2 (on seconds), n_sizes, crossover_size (power-law interpolation of work(size):
    where work / throughput = t0, i.e. useful work first costs as much as the fixed cost) and
    crossover_measured (the smallest measured size with work / throughput >= t0)."""
    missing = {"op", "size", "work", "median_s"} - set(df.columns)
    if missing:
        raise ValueError(f"df lacks column(s) {sorted(missing)}")
    if (df["median_s"] <= 0).any() or (df["work"] <= 0).any() or (df["size"] < 1).any():
        raise ValueError("median_s and work must be > 0 and size >= 1")
    rows = []
    for op, g in df.groupby("op", sort=False):
        g = g.sort_values("size")
        size, work, t = (g[c].to_numpy(float) for c in ("size", "work", "median_s"))
        if len(g) < 2:
            raise ValueError(f"op {op!r} has {len(g)} size(s); the fit needs >= 2")
        t0, c = _fit_one(work, t)
        pred = t0 + c * work
        ss_tot = float(((t - t.mean()) ** 2).sum())
        r2 = 1 - float(((t - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
        throughput = 1 / c if c > 0 else float("inf")
        xs, xm = _crossover(size, work, t0 * throughput)
        row = {"op": op, "t0_s": t0, "throughput": throughput, "r2": r2, "n_sizes": len(g),
               "crossover_size": xs, "crossover_measured": xm}
        if "unit" in g:
            row["unit"] = g["unit"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Operator counting
# --------------------------------------------------------------------------------------------


class _CountingMode(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts every aten operator that reaches the dispatcher (below autograd, above kernels)."""

    def __init__(self, views: bool):
        super().__init__()
        self.views = views
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.views or not getattr(func, "is_view", False):
            self.counts[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def _random_ids(model, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (1, n), generator=gen).to(model.device)  # (1, n)


def _prefilled_cache(model, context: int, seed: int = 0):
    cache = new_cache(model)
    if context > 0:
        with torch.inference_mode():
            forward(model, _random_ids(model, context, seed), cache, last_only=True)
    return cache


def operator_counts(model, input_ids: torch.Tensor, cache=None, *, views: bool = True) -> Counter:
    """Counter aten op name -> calls in ONE forward of ``input_ids`` (1, n) after ``cache``.

    ``cache=None`` means an empty cache (a prefill). A given cache is cropped back afterwards so
    the call has no side effect. ``views=False`` leaves out view operators (view, t, slice, ...),
    which do no work and cost less than a kernel. Counted with a ``TorchDispatchMode`` under
    ``inference_mode`` (so no autograd bookkeeping ops)."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] < 1:
        raise ValueError(f"input_ids must have shape (1, n >= 1); got {tuple(input_ids.shape)}")
    cache = new_cache(model) if cache is None else cache
    length = cache.get_seq_length()
    mode = _CountingMode(views)
    try:
        with torch.inference_mode(), mode:
            forward(model, input_ids, cache)
    finally:
        crop(cache, length)
    return mode.counts


def count_operators(model, input_ids: torch.Tensor, cache=None, *, views: bool = True) -> int:
    """Total aten operators dispatched by one forward (see ``operator_counts``)."""
    return sum(operator_counts(model, input_ids, cache, views=views).values())
