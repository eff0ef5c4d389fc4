"""Why a tiny draft is not a fast draft: fixed per-operator cost, counted and modelled (notebook 01).

Seed 000 found a draft with 1,300x fewer parameters no faster than its target. At batch size 1 an
eager decode step is a few hundred small kernels, and each costs a fixed dispatch/launch time ``t0``
(Python, the dispatcher, allocation, a CUDA launch) before it does any useful work. This module
measures that cost and builds the latency model the notebook tests:

    latency ~= n_ops * t0 + max(FLOPs / peak, bytes / bandwidth)                            (1)

i.e. a fixed-overhead term plus the roofline (Williams, Waterman & Patterson 2009, "Roofline: an
insightful visual performance model", CACM 52(4)) of the step's arithmetic and memory traffic.

- ``benchmark_ops``: microbenchmarks of decoder-step operators over sizes (``torch.utils.benchmark``).
- ``fit_fixed_cost``: per operator, fit ``t = t0 + work / throughput`` (non-negative least squares),
  and the size where useful work first costs as much as ``t0`` (the crossover).
- ``operator_counts`` / ``count_operators``: aten operators one forward actually dispatches.
- ``decode_flops_bytes``: FLOPs and bytes of a Llama-style forward of ``tokens`` after ``context``.
- ``measure_peak_flops`` / ``measure_bandwidth``: the machine's roofline (large matmul, large copy).
- ``LatencyModel`` (+ ``calibrate``): equation (1); ``predict_vs_measure``: its table against
  ``specnb.timing.step_latency``; ``llama_ladder``: random-init Llama models for width/depth sweeps.

Shapes are batch 1 throughout. "work" is FLOPs for matmul-like operators and elements for the rest
(column ``unit``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

from .decoding import crop, forward, new_cache
from .timing import benchmark_op, step_latency

__all__ = [
    "backend_sweep",
    "OPS",
    "DEFAULT_OPS",
    "benchmark_ops",
    "fit_fixed_cost",
    "operator_counts",
    "count_operators",
    "decode_flops_bytes",
    "measure_peak_flops",
    "measure_bandwidth",
    "LatencyModel",
    "calibrate",
    "predict_vs_measure",
    "llama_config",
    "llama_ladder",
]

SDPA_HEADS = 8  # sdpa microbenchmark: 8 heads of width 64, 1 query, n cached keys
SDPA_HEAD_DIM = 64
EMBEDDING_ROWS = 128  # rows of the embedding table in the lookup benchmark (cost does not depend on it)
ZOO_VOCAB = 4096  # the zoo's tokenizer


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


# --------------------------------------------------------------------------------------------
# FLOPs and bytes of a Llama-style forward
# --------------------------------------------------------------------------------------------


def _dims(config) -> dict:
    d, heads = config.hidden_size, config.num_attention_heads
    return {
        "d": d,
        "layers": config.num_hidden_layers,
        "heads": heads,
        "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": getattr(config, "head_dim", None) or d // heads,
        "ffn": config.intermediate_size,
        "vocab": config.vocab_size,
    }


def _dtype_bytes(config, dtype_bytes: int | None) -> int:
    if dtype_bytes is not None:
        return int(dtype_bytes)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return torch.empty((), dtype=dtype).element_size()


def decode_flops_bytes(config, context: int, tokens: int = 1, *, dtype_bytes: int | None = None,
                       cache_copy: bool = True) -> dict:
    """FLOPs and bytes of one forward of ``tokens`` new tokens after a KV cache of ``context``, for
    a Llama-style config (GQA attention, gated MLP, logits for every new token).

    FLOPs. Kaplan et al. 2020 (arXiv:2001.08361, Table 1): a forward costs ~2 N FLOPs per token
    for N non-embedding parameters, plus 2 d_model n_vocab for the de-embedding (lm_head), plus
    2 n_layer n_ctx d_attn for the attention logits QK^T. Here the matmul part is counted exactly
    from the projections (q, o: d x H*hd; k, v: d x Hkv*hd; gate, up, down: d x ffn), and the
    attention term adds P·V, which Kaplan's table leaves out: 4 * L * H * hd * tokens * T with
    T = context + tokens keys (the full (tokens, T) score rectangle the SDPA kernel computes).
    Norms, RoPE, softmax and residuals (O(d) per token) are ignored.

    Bytes (at the model dtype, ``dtype_bytes`` overrides the config's): every weight read once
    (lm_head d x V; embedding rows gathered: tokens x d; 2 norm vectors per layer + final norm);
    KV cache: attention reads all T keys and values, and ``cache_copy`` (Hugging Face's
    ``DynamicCache`` appends with ``torch.cat``) reads the old cache and writes T positions;
    activations: each layer's intermediate tensors written once and read once (see code), plus the
    attention scores and the logits.

    Returns flops, bytes and their parts (matmul_flops, attention_flops, weight_bytes, kv_bytes,
    activation_bytes)."""
    if context < 0 or tokens < 1:
        raise ValueError(f"context must be >= 0 and tokens >= 1; got context={context}, tokens={tokens}")
    m = _dims(config)
    d, L, h, kv, hd, f, v = (m[k] for k in ("d", "layers", "heads", "kv_heads", "head_dim", "ffn", "vocab"))
    s = _dtype_bytes(config, dtype_bytes)
    T = context + tokens  # keys attended by the new tokens

    layer_weights = d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * f  # q, k, v, o, gate, up, down
    matmul_flops = tokens * (2 * L * layer_weights + 2 * d * v)  # 2 FLOPs per weight per token + lm_head
    attention_flops = 4 * L * h * hd * tokens * T  # QK^T and P·V, 2 * hd FLOPs per (head, query, key) each

    weight_elems = L * (layer_weights + 2 * d) + d + d * v + tokens * d  # + norms, final norm, lm_head, rows
    kv_width = 2 * kv * hd  # keys + values per position per layer
    kv_elems = L * kv_width * (T + ((context + T) if cache_copy else tokens))  # attention read + cat (or write)
    per_token_layer = (
        2 * d  # input norm: read, write
        + d + (h + 2 * kv) * hd  # q, k, v projections: read input, write outputs
        + 2 * (h + kv) * hd  # RoPE on q and k: read, write
        + 2 * h * hd  # attention: read q, write output
        + h * hd + d  # o projection: read, write
        + 3 * d  # residual add
        + 2 * d  # post-attention norm
        + d + 2 * f  # gate and up: read input, write outputs
        + 3 * f  # silu(gate) * up: read 2, write 1
        + f + d  # down: read, write
        + 3 * d  # residual add
    )
    activation_elems = tokens * (L * per_token_layer + 2 * d + v) + L * 2 * h * tokens * T  # + final norm, logits; scores
    weight_b, kv_b, act_b = s * weight_elems, s * kv_elems, s * activation_elems
    return {
        "flops": float(matmul_flops + attention_flops),
        "bytes": float(weight_b + kv_b + act_b),
        "matmul_flops": float(matmul_flops),
        "attention_flops": float(attention_flops),
        "weight_bytes": float(weight_b),
        "kv_bytes": float(kv_b),
        "activation_bytes": float(act_b),
    }


# --------------------------------------------------------------------------------------------
# Machine roofline
# --------------------------------------------------------------------------------------------


def measure_peak_flops(device: str | torch.device = "cpu", n: int = 2048, *, rows: int | None = None,
                       dtype: torch.dtype = torch.float32, min_run_time: float = 0.5) -> float:
    """FLOP/s of an (rows, n) @ (n, n) matmul (2 rows n^2 FLOPs; rows defaults to n): the compute roof.

    With the default square matmul this is the machine's peak. A small ``rows`` (e.g. the k+1
    tokens of a verification) gives the throughput skinny matmuls actually reach, often several
    times below peak on CPU; use it as the roof when the peak under-predicts verification cost."""
    rows = n if rows is None else rows
    if n < 1 or rows < 1:
        raise ValueError(f"n and rows must be >= 1; got n={n}, rows={rows}")
    device = torch.device(device)
    a, b = torch.randn(rows, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(rows, n, device=device, dtype=dtype)  # (rows, n)
    with torch.inference_mode():
        m = benchmark_op(lambda: torch.matmul(a, b, out=out), label=f"matmul {rows}x{n}", min_run_time=min_run_time)
    return 2 * rows * n**2 / m["median_s"]


def measure_bandwidth(device: str | torch.device = "cpu", mb: float = 256, *, min_run_time: float = 0.5) -> float:
    """Bytes/s of copying an ``mb`` MiB tensor into another: the memory roof. Counts the read and
    the write (2 x size), the convention of STREAM's Copy (McCalpin 1995)."""
    if mb <= 0:
        raise ValueError(f"mb must be > 0; got {mb}")
    device = torch.device(device)
    n = int(mb * 2**20 // 4)
    src, dst = torch.randn(n, device=device), torch.empty(n, device=device)
    with torch.inference_mode():
        m = benchmark_op(lambda: dst.copy_(src), label=f"copy {mb} MiB", min_run_time=min_run_time)
    return 2 * n * 4 / m["median_s"]


# --------------------------------------------------------------------------------------------
# Latency model
# --------------------------------------------------------------------------------------------


def _param_bytes(model) -> int:
    return next(model.parameters()).element_size()


@dataclass
class LatencyModel:
    """Equation (1): latency = n_ops * t0_s + max(flops / peak, bytes / bandwidth).

    - ``peak_by_tokens`` (optional): peak FLOP/s of a skinny (t, n) @ (n, n) matmul per row count t,
      measured with ``measure_peak_flops(rows=t)``. A forward of t tokens uses the entry for the
      largest t' <= t (else ``peak_flops``): on a CPU a 4-row matmul reaches a fraction of the
      square-matmul peak, which is why verifying k+1 tokens costs more than one step.
    - ``combine``: "max" assumes compute and memory traffic overlap (the roofline); "sum" assumes
      they do not (closer to a CPU running GEMV-like kernels one after another).
    ``method`` records how t0 was obtained (see ``calibrate``)."""

    t0_s: float
    peak_flops: float
    bandwidth: float
    method: str = "given"
    peak_by_tokens: dict | None = None
    combine: str = "max"

    def __post_init__(self):
        if not (self.t0_s >= 0 and self.peak_flops > 0 and self.bandwidth > 0):
            raise ValueError(f"need t0_s >= 0, peak_flops > 0, bandwidth > 0; got {self}")
        if self.combine not in ("max", "sum"):
            raise ValueError(f"combine must be 'max' or 'sum'; got {self.combine!r}")

    def peak_for(self, tokens: int) -> float:
        """The FLOP/s roof for a forward of ``tokens`` rows."""
        table = {int(t): float(v) for t, v in (self.peak_by_tokens or {}).items() if int(t) <= tokens}
        return table[max(table)] if table else self.peak_flops

    def estimate(self, n_ops: int, flops: float, bytes: float, tokens: int = 1) -> dict:
        """The terms of (1) from counts: overhead_s, compute_s, memory_s, predicted_s."""
        overhead, compute, memory = n_ops * self.t0_s, flops / self.peak_for(tokens), bytes / self.bandwidth
        work = compute + memory if self.combine == "sum" else max(compute, memory)
        return {"n_ops": n_ops, "flops": flops, "bytes": bytes, "overhead_s": overhead, "compute_s": compute,
                "memory_s": memory, "predicted_s": overhead + work}

    def breakdown(self, model, context: int, tokens: int = 1) -> dict:
        """``estimate`` for ``model``: operators counted on a real forward after ``context`` cached
        tokens, FLOPs and bytes from ``decode_flops_bytes`` at the parameters' dtype."""
        cache = _prefilled_cache(model, context)
        n_ops = count_operators(model, _random_ids(model, tokens, seed=1), cache)
        fb = decode_flops_bytes(model.config, context, tokens, dtype_bytes=_param_bytes(model))
        return self.estimate(n_ops, fb["flops"], fb["bytes"], tokens)

    def predict(self, model, context: int, tokens: int = 1) -> float:
        """Predicted seconds of one forward of ``tokens`` tokens after ``context`` (equation 1)."""
        return self.breakdown(model, context, tokens)["predicted_s"]


def _fit_t0_decode(models: Mapping[str, torch.nn.Module], peak: float, bw: float, context: int,
                   min_run_time: float, peak_by_tokens: dict | None = None, combine: str = "max") -> float:
    """t0 through the origin: least squares of measured - roofline = n_ops * t0 over ``models``."""
    probe = LatencyModel(0.0, peak, bw, peak_by_tokens=peak_by_tokens, combine=combine)
    n, excess = [], []
    for model in models.values():
        parts = probe.breakdown(model, context, 1)
        measured = step_latency(model, context=context, tokens=1, min_run_time=min_run_time)["median_s"]
        n.append(parts["n_ops"])
        excess.append(measured - parts["predicted_s"])
    n, excess = np.asarray(n, float), np.asarray(excess, float)
    return max(0.0, float((n * excess).sum() / (n * n).sum()))


def calibrate(device: str | torch.device = "cpu", *, method: str = "decode", models=None, context: int = 64,
              sizes: Sequence[int] = (16, 32, 64, 128, 256), matmul_n: int = 2048, matmul_rows: int | None = None,
              copy_mb: float = 256, min_run_time: float = 0.2, skinny_rows: Sequence[int] = (),
              combine: str = "max") -> LatencyModel:
    """A ``LatencyModel`` for ``device``: peak FLOP/s (``measure_peak_flops`` of a (matmul_rows,
    matmul_n) @ (matmul_n, matmul_n) matmul; square by default), bandwidth
    (``measure_bandwidth``) and t0 by ``method``:

    - "decode" (default): fitted from measured 1-token decode latencies of ``models`` (default: a
      depth ladder 1, 2, 4 of width-64 random Llamas, vocab 4096), as the least-squares t0 in
      measured - roofline = n_ops * t0. This is the per-operator cost as an eager Hugging Face
      forward pays it: besides the kernel's dispatch it carries the Python of nn.Module calls,
      masks and cache bookkeeping, which a bare operator microbenchmark never runs. Calibrate on
      small models, predict larger ones (the width and depth sweep is the out-of-sample test).
    - "ops": the median fitted t0 (``fit_fixed_cost``) of the operator microbenchmarks at
      ``sizes``: a lower bound, the cost of the kernels alone.

    ``skinny_rows`` (e.g. (1, 2, 4, 8)) measures the matmul roof per row count for
    ``peak_by_tokens``; ``combine`` is passed to the model (see ``LatencyModel``).
    """
    if method not in ("decode", "ops"):
        raise ValueError(f"method must be 'decode' or 'ops'; got {method!r}")
    peak = measure_peak_flops(device, matmul_n, rows=matmul_rows, min_run_time=min_run_time)
    bw = measure_bandwidth(device, copy_mb, min_run_time=min_run_time)
    by_rows = {int(r): measure_peak_flops(device, matmul_n, rows=int(r), min_run_time=min_run_time) for r in skinny_rows} or None
    if method == "ops":
        fit = fit_fixed_cost(benchmark_ops(sizes, device=device, min_run_time=min_run_time))
        return LatencyModel(float(fit["t0_s"].median()), peak, bw, method="ops: median fitted t0",
                            peak_by_tokens=by_rows, combine=combine)
    if models is None:
        models = llama_ladder(widths=(64,), depths=(1, 2, 4), device=device)
    if not models:
        raise ValueError("models is empty")
    t0 = _fit_t0_decode(models, peak, bw, context, min_run_time, by_rows, combine)
    return LatencyModel(t0, peak, bw, method=f"decode: fitted on {', '.join(models)}", peak_by_tokens=by_rows, combine=combine)


def predict_vs_measure(models: Mapping[str, torch.nn.Module], latency_model: LatencyModel, context: int = 64,
                       tokens: Iterable[int] = (1, 4), min_run_time: float = 0.3) -> pd.DataFrame:
    """One row per (model, tokens): name, tokens, n_ops, the terms of (1), predicted_s, measured_s
    (``specnb.timing.step_latency``: median of a forward after ``context`` cached tokens) and
    error = predicted / measured - 1."""
    tokens = [int(t) for t in tokens]
    if not models:
        raise ValueError("models is empty")
    if not tokens or min(tokens) < 1:
        raise ValueError(f"tokens must be >= 1; got {tokens}")
    rows = []
    for name, model in models.items():
        for k in tokens:
            parts = latency_model.breakdown(model, context, k)
            measured = step_latency(model, context=context, tokens=k, min_run_time=min_run_time)["median_s"]
            rows.append({"name": name, "tokens": k, "context": context, **parts, "measured_s": measured,
                         "error": parts["predicted_s"] / measured - 1})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Random Llama ladders
# --------------------------------------------------------------------------------------------


def llama_config(width: int, depth: int, *, head_dim: int = 52, ffn_ratio: float = 1024 / 416,
                 vocab_size: int = ZOO_VOCAB, max_positions: int = 1024):
    """A zoo-like ``LlamaConfig``: heads ~ width / head_dim (lowered until it divides width) of width ``head_dim``
    (MHA), FFN = ``ffn_ratio`` x width rounded to a multiple of 16 (the zoo target: 416 -> 1024),
    tied embeddings, vocabulary 4096."""
    from transformers import LlamaConfig

    if width < 1 or depth < 1 or head_dim < 1:
        raise ValueError(f"width, depth and head_dim must be >= 1; got {width}, {depth}, {head_dim}")
    heads = max(1, round(width / head_dim))
    while width % heads:  # transformers requires hidden_size divisible by the number of heads
        heads -= 1
    ffn = max(16, int(round(width * ffn_ratio / 16)) * 16)
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=ffn, num_hidden_layers=depth,
        num_attention_heads=heads, num_key_value_heads=heads, head_dim=head_dim,
        max_position_embeddings=max_positions, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
        pad_token_id=0, use_cache=True, rope_theta=10000.0,
    )


def llama_ladder(widths: Iterable[int] = (416,), depths: Iterable[int] = (1, 12), *, seed: int = 0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", **config_kw) -> dict:
    """Random-init ``LlamaForCausalLM`` models for every (width, depth), named ``w{width}-d{depth}``,
    in eval mode (``config_kw`` goes to ``llama_config``)."""
    from transformers import LlamaForCausalLM

    out = {}
    for w in widths:
        for L in depths:
            config = llama_config(int(w), int(L), **config_kw)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = LlamaForCausalLM(config)
            out[f"w{w}-d{L}"] = model.to(device=device, dtype=dtype).eval()
    return out


# --------------------------------------------------------------------------------------------
# Seed 000's component table: where one decode step spends its time
# --------------------------------------------------------------------------------------------

#: module-name patterns of a Hugging Face Llama-style model, by seed 000's component
COMPONENTS = {
    "attention": ("self_attn",),
    "mlp": ("mlp",),
    "norms": ("input_layernorm", "post_attention_layernorm", "model.norm"),
    "embedding": ("embed_tokens",),
    "head": ("lm_head",),
}


def _component_of(name: str) -> str | None:
    for component, patterns in COMPONENTS.items():
        for p in patterns:
            if name == p or name.endswith("." + p) or (p == "model.norm" and name == "model.norm"):
                return component
    return None


def component_times(model, context: int = 128, tokens: int = 1, repeats: int = 20, seed: int = 0) -> dict:
    """Seconds per decode step spent in each of seed 000's components (attention, MLP, norms,
    embedding, head), measured with forward pre/post hooks on the matching modules around a real
    forward after ``context`` cached tokens; median over ``repeats`` steps (after one warm-up).
    ``total`` is the whole forward; ``other`` what no component covers (masks, RoPE, cache, Python)."""
    import time

    from .decoding import crop, forward
    from .timing import synchronize

    if repeats < 5:
        raise ValueError(f"repeats must be >= 5; got {repeats}")
    modules = {n: m for n, m in model.named_modules() if _component_of(n)}
    if not modules:
        raise ValueError(f"{type(model).__name__} has none of the modules {sorted(COMPONENTS)} looks for (Llama-style names)")
    device = next(model.parameters()).device
    spent = {c: 0.0 for c in COMPONENTS}
    starts: dict[str, float] = {}

    def pre(name):
        def hook(module, args):
            synchronize(device)
            starts[name] = time.perf_counter()
        return hook

    def post(name):
        def hook(module, args, output):
            synchronize(device)
            spent[_component_of(name)] += time.perf_counter() - starts.pop(name)
        return hook

    cache = _prefilled_cache(model, context, seed)
    step = _random_ids(model, tokens, seed + 1)
    rows = []
    handles = [h for n, m in modules.items() for h in (m.register_forward_pre_hook(pre(n)), m.register_forward_hook(post(n)))]
    try:
        with torch.inference_mode():
            for r in range(repeats + 1):
                for c in spent:
                    spent[c] = 0.0
                synchronize(device)
                t0 = time.perf_counter()
                forward(model, step, cache)
                synchronize(device)
                total = time.perf_counter() - t0
                crop(cache, context)
                if r:  # the first step is a warm-up
                    rows.append({**spent, "total": total})
    finally:
        for h in handles:
            h.remove()
    frame = pd.DataFrame(rows).median()
    out = {c: float(frame[c]) for c in COMPONENTS}
    out["total"] = float(frame["total"])
    out["other"] = out["total"] - sum(out[c] for c in COMPONENTS)
    return out


def zoo_shaped_models(names: Iterable[str] | None = None, seed: int = 0) -> dict:
    """Random-init models with the exact configurations of the zoo (``specnb.zoo.zoo_specs``).
    Latency does not depend on the weights' values, so timing studies need not wait for training."""
    from transformers import LlamaForCausalLM

    from .zoo import VOCAB_SIZE, llama_config as zoo_config, zoo_specs

    specs = {s.name: s for s in zoo_specs()}
    names = list(names) if names is not None else list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown zoo models {unknown}; choose from {', '.join(specs)}")
    out = {}
    for n in names:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out[n] = LlamaForCausalLM(zoo_config(specs[n], VOCAB_SIZE)).eval()
    return out


def decode_sweep(models: Mapping[str, torch.nn.Module], context: int = 128, min_run_time: float = 0.3) -> pd.DataFrame:
    """One row per model: width, depth, parameters, dispatched operators of one decode step and its
    measured latency (``specnb.timing.step_latency``) after ``context`` cached tokens."""
    rows = []
    for name, model in models.items():
        cfg = model.config
        cache = _prefilled_cache(model, context)
        rows.append({
            "model": name, "width": cfg.hidden_size, "depth": cfg.num_hidden_layers,
            "params": sum(p.numel() for p in model.parameters()),
            "n_ops": count_operators(model, _random_ids(model, 1, seed=1), cache),
            "decode_s": step_latency(model, context=context, min_run_time=min_run_time)["median_s"],
        })
    return pd.DataFrame(rows)


def component_table(models: Mapping[str, torch.nn.Module], context: int = 128, rounds: int = 6, repeats: int = 5) -> pd.DataFrame:
    """``component_times`` of several models, interleaved: ``rounds`` rounds visiting every model in
    rotated order (A B C, B C A, ...), so drift in the machine's speed hits all alike; the table
    holds, per model (rows, in the given order), the median over rounds of each component (seconds)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    names = list(models)
    rows = []
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            rows.append({"model": name, **component_times(models[name], context=context, repeats=repeats, seed=r)})
    return pd.DataFrame(rows).groupby("model", sort=False).median().loc[names]


def backend_sweep(models: dict, *, backends: Iterable[str] = ("eager", "compiled"), context: int = 128,
                  tokens: Iterable[int] = (1,), min_run_time: float = 0.3, progress: bool = True) -> pd.DataFrame:
    """Decode-step latency of every model under every ``backend`` of ``specnb.fastpath.step_latency``
    ("eager": DynamicCache; "static": preallocated cache; "compiled": static cache + torch.compile,
    compile time reported apart): one tidy row per (model, backend, tokens) with params, layers,
    hidden, median and IQR seconds and compile seconds. What removing per-operator overhead buys."""
    from tqdm import tqdm

    from .fastpath import step_latency as fast_step_latency

    backends, tokens = list(backends), list(tokens)
    if not models or not backends or not tokens:
        raise ValueError("backend_sweep needs at least one model, backend and token count")
    rows = []
    bar = tqdm(total=len(models) * len(backends) * len(tokens), desc="backends", disable=not progress, leave=False)
    for name, model in models.items():
        cfg = model.config
        for backend in backends:
            for n in tokens:
                r = fast_step_latency(model, context=context, tokens=n, backend=backend, min_run_time=min_run_time)
                rows.append({"name": name, "backend": backend, "tokens": n, "context": context,
                             "params": sum(p.numel() for p in model.parameters()), "layers": cfg.num_hidden_layers,
                             "hidden": cfg.hidden_size, "median_s": r["median_s"], "iqr_s": r.get("iqr_s", float("nan")),
                             "compile_seconds": r.get("compile_seconds", 0.0)})
                bar.update()
    bar.close()
    return pd.DataFrame(rows)
