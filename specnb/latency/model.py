"""The calibrated latency model: dispatched operators x t0 plus the roofline of the step.

    latency ~= n_ops * t0 + max(FLOPs / peak, bytes / bandwidth)                            (1)

i.e. a fixed-overhead term plus the roofline (Williams, Waterman & Patterson 2009, "Roofline: an
insightful visual performance model", CACM 52(4)) of the step's arithmetic and memory traffic.

- ``decode_flops_bytes``: FLOPs and bytes of a Llama-style forward of ``tokens`` after ``context``.
- ``measure_peak_flops`` / ``measure_bandwidth``: the machine's roofline (large matmul, large copy).
- ``LatencyModel`` (+ ``calibrate``): equation (1); ``predict_vs_measure``: its table against
  ``specnb.timing.step_latency``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..timing import benchmark_op, step_latencies, step_latency
from .ladder import llama_ladder
from .ops import _prefilled_cache, _random_ids, benchmark_ops, count_operators, fit_fixed_cost
from .step import judged

__all__ = ["decode_flops_bytes", "measure_peak_flops", "measure_bandwidth", "LatencyModel", "calibrate",
           "predict_vs_measure"]


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
    with torch.inference_mode():  # no out=: with it MKL takes a slow path at 2-8 rows on CPU
        m = benchmark_op(lambda: torch.matmul(a, b), label=f"matmul {rows}x{n}", min_run_time=min_run_time)
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


def predict_vs_measure(models: Mapping[str, torch.nn.Module], latency_model, context: int = 64,
                       tokens: Iterable[int] = (1, 4), min_run_time: float = 0.3, rounds: int = 3,
                       progress: bool = False, others: Mapping[str, object] | None = None) -> pd.DataFrame:
    """One row per (model, tokens): name, tokens, the model's terms (``latency_model.breakdown``:
    a ``LatencyModel`` or a ``StepModel``), predicted_s, measured_s and error = predicted / measured - 1.
    measured_s is the median over ``rounds`` rotated rounds of ``specnb.timing.step_latency`` (a
    forward after ``context`` cached tokens), every (model, tokens) interleaved in one run. ``others``
    maps a name to more latency models, judged on the same measurements (predicted_s_<name>, error_<name>)."""
    tokens = [int(t) for t in tokens]
    if not models:
        raise ValueError("models is empty")
    if not tokens or min(tokens) < 1:
        raise ValueError(f"tokens must be >= 1; got {tokens}")
    entries = [(name, k) for name in models for k in tokens]
    timed = step_latencies({f"{name}@{k}": (models[name], k) for name, k in entries}, context=context, rounds=rounds,
                           min_run_time=min_run_time, progress=progress)
    return judged(models, latency_model, dict(zip(entries, timed["median_s"])), context, others)
