"""The step model: a forward's per-operator cost plus the time to stream its weights from where they live.

    t(T) = F_T + L * (B_T + A_T * d) + W / BW(footprint)                                    (2)

for a forward of T new tokens through L layers of width d whose linear layers hold W bytes of weights:

- F_T: the cost per forward at T tokens (embedding, masks, the final norm, the cache's bookkeeping).
- B_T + A_T * d: the cost per layer of everything but streaming the weights. A layer runs ~57
  operators, each costing t0 + work / throughput (notebook 01, section 1) with work ~ d (norms, RoPE,
  residual adds, the gated MLP's elementwise product, the KV-cache append and attention over d-wide
  rows), so the sum is linear in d: B_T collects the t0s (Python of the module calls, the
  dispatcher), A_T the width-dependent work.
- F_T, B_T and A_T >= 0 are fitted by non-negative least squares on relative error, on a calibration
  ladder of random Llamas timed un-profiled (``specnb.timing.step_latencies``, torch.utils.benchmark).
- BW(footprint): the rate at which a 1-row matmul (GEMV) streams weights when the working set is
  ``footprint`` bytes (the parameters plus the KV cache), measured by ``measure_stream_bandwidth``:
  a pool of weight matrices visited in turn, lmbench's memory-hierarchy sweep (McVoy & Staelin 1996,
  "lmbench: portable tools for performance analysis", USENIX ATC) with a GEMV as the reader. On a CPU
  the curve falls off a cliff where the working set leaves the last-level cache, which is what makes
  a draft that fits in cache far cheaper per parameter than a target that does not. This term is
  measured, not fitted: the weights cost what the sweep says they cost.

At batch size 1 a decode step's matmuls are GEMVs and memory-bound (Williams et al. 2009's roofline
below the ridge point), so the FLOP term of ``LatencyModel`` (1) is left out; at the k+1 tokens of a
verification the matmuls are still far below the ridge, and the extra cost of the wider forward is
in F_T, B_T and A_T, fitted at every T the model is used for.

- ``measure_stream_bandwidth``: the BW(footprint) curve of this machine.
- ``step_features``: L, d, W and the footprint of a model after ``context`` cached tokens.
- ``StepModel`` (2), ``fit_step_model`` (from measured latencies), ``calibrate_step_model``
  (measure a ladder, and the models to check beside it, in one interleaved run, and fit),
  ``judged`` (predicted vs measured rows), ``STEP_LADDER``: the calibration shapes, none of them a zoo shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

from ..timing import benchmark_op, step_latencies
from .ladder import llama_ladder

__all__ = ["STEP_LADDER", "STREAM_MB", "measure_stream_bandwidth", "step_features", "StepModel", "fit_step_model",
           "judged", "calibrate_step_model"]

#: calibration ladder of ``calibrate_step_model``: widths x depths of random zoo-like Llamas (vocab 4096);
#: the widths avoid the zoo's (32 ... 416), so the zoo is an out-of-sample check
STEP_LADDER = {"widths": (24, 64, 144, 240, 352, 512), "depths": (1, 4, 12)}

#: working-set sizes (MiB) of the default stream sweep: L2, through the last-level cache's edge, to DRAM
STREAM_MB = (1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 64, 96, 128)


def measure_stream_bandwidth(sizes_mb: Iterable[float] = STREAM_MB, *, shape: tuple[int, int] = (1024, 416),
                             device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                             min_run_time: float = 0.2) -> pd.DataFrame:
    """Bytes/s a 1-row ``F.linear`` reaches reading weights from a working set of each size: a pool of
    ``shape`` (out, in) weight matrices totalling ~size MiB, all multiplied in turn, so each matrix comes
    back only after the whole pool has passed through the caches. One row per size: working_set_bytes
    (as built: a whole number of matrices), matrices, seconds per matrix, bytes_per_s."""
    sizes = [float(s) for s in sizes_mb]
    if not sizes or min(sizes) <= 0:
        raise ValueError(f"sizes_mb must be non-empty and > 0; got {sizes}")
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (out, in) with both >= 1; got {shape}")
    device = torch.device(device)
    out_f, in_f = int(shape[0]), int(shape[1])
    per = out_f * in_f * torch.empty((), dtype=dtype).element_size()
    rows = []
    with torch.inference_mode():
        x = torch.randn(1, in_f, device=device, dtype=dtype)  # (1, in): one decode token
        for mb in sizes:
            n = max(1, round(mb * 2**20 / per))
            pool = [torch.randn(out_f, in_f, device=device, dtype=dtype) for _ in range(n)]

            def run(pool=pool):
                for w in pool:
                    F.linear(x, w)  # (1, in) @ (in, out)

            m = benchmark_op(run, label=f"stream {mb:g} MiB", min_run_time=min_run_time)
            rows.append({"working_set_bytes": n * per, "matrices": n, "seconds_per_matrix": m["median_s"] / n,
                         "bytes_per_s": n * per / m["median_s"]})
            del pool
    return pd.DataFrame(rows)


def _kv_geometry(config) -> tuple[int, int]:
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return kv_heads, head_dim


def step_features(model, context: int, tokens: int = 1) -> dict:
    """What (2) reads off a model for a forward of ``tokens`` after ``context`` cached tokens:
    layers; width (hidden size d); weight_bytes, the bytes of every ``nn.Linear`` weight (the tied lm_head counted once);
    footprint_bytes, the unique parameters plus the KV cache (2 x layers x (context + tokens) x
    kv_heads x head_dim at the parameters' dtype)."""
    if context < 0 or tokens < 1:
        raise ValueError(f"context must be >= 0 and tokens >= 1; got context={context}, tokens={tokens}")
    weights = {m.weight.data_ptr(): m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)}
    if not weights:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers; the step model needs a transformer LM")
    params = {p.data_ptr(): p for p in model.parameters()}
    size = next(iter(params.values())).element_size()
    config = model.config
    kv_heads, head_dim = _kv_geometry(config)
    layers = int(config.num_hidden_layers)
    kv = 2 * layers * (context + tokens) * kv_heads * head_dim * size
    return {"layers": layers, "width": int(config.hidden_size),
            "weight_bytes": float(sum(w.numel() * w.element_size() for w in weights.values())),
            "footprint_bytes": float(sum(p.numel() * p.element_size() for p in params.values()) + kv)}


@dataclass
class StepModel:
    """Equation (2). ``coefficients`` maps tokens T -> (F_T s, B_T s per layer, A_T s per layer per unit
    of width); ``stream`` is
    ``measure_stream_bandwidth``'s curve (working_set_bytes, bytes_per_s), interpolated linearly and
    held flat beyond its ends. ``calibration`` keeps the fit's own rows (measured vs fitted), ``check``
    the rows of models timed beside the calibration but not fitted on (``calibrate_step_model``), ``method``
    says what it was fitted on."""

    coefficients: dict
    stream: pd.DataFrame
    method: str = "given"
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    check: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def __post_init__(self):
        self.coefficients = {int(t): tuple(float(v) for v in c) for t, c in self.coefficients.items()}
        if not self.coefficients:
            raise ValueError("coefficients is empty; calibrate at least one token count")
        for t, c in self.coefficients.items():
            if t < 1 or len(c) != 3 or min(c) < 0:
                raise ValueError(f"coefficients[{t}] must be 3 values >= 0 (F_s, B_s, A_s) for tokens >= 1; got {c}")
        missing = {"working_set_bytes", "bytes_per_s"} - set(self.stream.columns)
        if missing:
            raise ValueError(f"stream lacks column(s) {sorted(missing)}; pass measure_stream_bandwidth()")
        if len(self.stream) < 1 or (self.stream["bytes_per_s"] <= 0).any():
            raise ValueError("stream needs at least one row with bytes_per_s > 0")
        self.stream = self.stream.sort_values("working_set_bytes").reset_index(drop=True)

    @property
    def tokens(self) -> list[int]:
        return sorted(self.coefficients)

    def bandwidth(self, footprint_bytes: float) -> float:
        """BW(footprint): the stream curve at this working set (bytes/s)."""
        return float(np.interp(footprint_bytes, self.stream["working_set_bytes"], self.stream["bytes_per_s"]))

    def estimate(self, layers: int, width: int, weight_bytes: float, footprint_bytes: float, tokens: int = 1) -> dict:
        """The terms of (2) from counts: fixed_s (F_T + L B_T), width_s (L A_T d), stream_s (W / BW),
        predicted_s (their sum)."""
        if tokens not in self.coefficients:
            raise ValueError(f"the step model is calibrated at tokens {self.tokens}, not {tokens}; "
                             f"pass tokens=({', '.join(map(str, sorted({*self.tokens, tokens})))}) to calibrate_step_model")
        f, b, a = self.coefficients[tokens]
        fixed, wide, stream = f + layers * b, layers * a * width, weight_bytes / self.bandwidth(footprint_bytes)
        return {"layers": layers, "width": width, "weight_bytes": weight_bytes, "footprint_bytes": footprint_bytes,
                "bandwidth": self.bandwidth(footprint_bytes), "fixed_s": fixed, "width_s": wide, "stream_s": stream,
                "predicted_s": fixed + wide + stream}

    def breakdown(self, model, context: int, tokens: int = 1) -> dict:
        """``estimate`` for ``model`` (``step_features``)."""
        return self.estimate(**step_features(model, context, tokens), tokens=tokens)

    def predict(self, model, context: int, tokens: int = 1) -> float:
        """Predicted seconds of one forward of ``tokens`` tokens after ``context`` (equation 2)."""
        return self.breakdown(model, context, tokens)["predicted_s"]

    def to_frame(self) -> pd.DataFrame:
        """One row per calibrated T: tokens, fixed_forward_s, fixed_layer_s, width_layer_s (per unit of
        width), and the
        stream curve's ends (cache_bytes_per_s at the smallest working set, dram_bytes_per_s at the largest)."""
        ends = self.stream["bytes_per_s"]
        return pd.DataFrame([{"tokens": t, "fixed_forward_s": f, "fixed_layer_s": b, "width_layer_s": a,
                              "cache_bytes_per_s": float(ends.iloc[0]), "dram_bytes_per_s": float(ends.iloc[-1]),
                              "method": self.method} for t, (f, b, a) in sorted(self.coefficients.items())])


def fit_step_model(measured: pd.DataFrame, stream: pd.DataFrame, *, method: str = "fitted") -> StepModel:
    """(F_T, B_T, A_T) >= 0 per T from measured latencies: ``measured`` has one row per (model,
    tokens) with columns tokens, layers, width, weight_bytes, footprint_bytes and measured_s. The stream
    term W / BW(footprint) is subtracted as measured; the rest is fitted by non-negative least squares
    on relative error (rows weighted by 1 / measured_s, so small models count as much as large ones).
    Needs >= 3 rows per T; the returned model's ``calibration`` adds fitted_s and error."""
    need = {"tokens", "layers", "width", "weight_bytes", "footprint_bytes", "measured_s"}
    missing = need - set(measured.columns)
    if missing:
        raise ValueError(f"measured lacks column(s) {sorted(missing)}")
    if (measured["measured_s"] <= 0).any():
        raise ValueError("measured_s must be > 0")
    probe = StepModel({1: (0.0, 0.0, 0.0)}, stream)  # for its bandwidth curve
    coefficients, parts = {}, []
    for t, g in measured.groupby("tokens", sort=True):
        if len(g) < 3:
            raise ValueError(f"tokens={t} has {len(g)} measured model(s); the fit of F, B and A needs >= 3")
        stream_s = g["weight_bytes"].to_numpy(float) / np.array([probe.bandwidth(b) for b in g["footprint_bytes"]])
        layers = g["layers"].to_numpy(float)
        x = np.stack([np.ones(len(g)), layers, layers * g["width"].to_numpy(float)], axis=1)  # (models, 3)
        y = g["measured_s"].to_numpy(float)
        coef, _ = nnls(x / y[:, None], (y - stream_s) / y)
        coefficients[int(t)] = tuple(coef)
        fitted = x @ coef + stream_s
        parts.append(g.assign(fitted_s=fitted, error=fitted / y - 1))
    return StepModel(coefficients, stream, method=method, calibration=pd.concat(parts, ignore_index=True))


def judged(models: Mapping[str, torch.nn.Module], latency_model, measured: Mapping[tuple[str, int], float], context: int,
           others: Mapping[str, object] | None = None) -> pd.DataFrame:
    """One row per (name, tokens) of ``measured`` (seconds): the latency model's terms
    (``latency_model.breakdown``), predicted_s, measured_s, error = predicted / measured - 1, and for
    every entry of ``others`` (more latency models) predicted_s_<name> and error_<name>."""
    rows = []
    for (name, k), seconds in measured.items():
        parts = latency_model.breakdown(models[name], context, k)
        row = {"name": name, "tokens": k, "context": context, **parts, "measured_s": seconds,
               "error": parts["predicted_s"] / seconds - 1}
        for label, other in (others or {}).items():
            row[f"predicted_s_{label}"] = other.predict(models[name], context, k)
            row[f"error_{label}"] = row[f"predicted_s_{label}"] / seconds - 1
        rows.append(row)
    return pd.DataFrame(rows)


def calibrate_step_model(models: Mapping[str, torch.nn.Module] | None = None, *, tokens: Sequence[int] = (1, 4),
                         context: int = 128, rounds: int = 3, min_run_time: float = 0.3, stream: pd.DataFrame | None = None,
                         stream_mb: Iterable[float] = STREAM_MB, check: Mapping[str, torch.nn.Module] | None = None,
                         others: Mapping[str, object] | None = None, progress: bool = True,
                         device: str | torch.device = "cpu") -> StepModel:
    """A ``StepModel`` for this machine: the stream curve (``measure_stream_bandwidth`` unless
    ``stream`` is given), then every calibration model timed at every T in ``tokens`` after ``context``
    cached tokens, then ``fit_step_model``. ``models`` defaults to the ``STEP_LADDER`` of random Llamas
    (18 shapes).

    ``check`` (name -> model, names distinct from ``models``'): models the fit never sees, timed in the
    same run, interleaved with the calibration models in ``rounds`` rotated rounds
    (``step_latencies``), so that drift between calibrating and checking cannot pass for model error.
    Their rows (``judged``, with ``others`` judged on the same measurements) are in the model's ``check``."""
    tokens = sorted({int(t) for t in tokens})
    if not tokens or tokens[0] < 1:
        raise ValueError(f"tokens must be >= 1; got {tokens}")
    if models is None:
        models = llama_ladder(STEP_LADDER["widths"], STEP_LADDER["depths"], device=device)
    if len(models) < 3:
        raise ValueError(f"need >= 3 calibration models to fit F, B and A; got {len(models)}")
    check = dict(check or {})
    shared = sorted(set(models) & set(check))
    if shared:
        raise ValueError(f"check models must not be calibration models; rename or drop {shared}")
    if stream is None:
        stream = measure_stream_bandwidth(stream_mb, device=device, min_run_time=min(min_run_time, 0.2))
    every = {**models, **check}
    entries = [(name, t) for name in every for t in tokens]
    timed = step_latencies({f"{name}@{t}": (every[name], t) for name, t in entries}, context=context, rounds=rounds,
                           min_run_time=min_run_time, progress=progress)
    measured = dict(zip(entries, timed["median_s"]))
    rows = [{"name": name, "tokens": t, **step_features(models[name], context, t), "measured_s": measured[name, t]}
            for name in models for t in tokens]
    label = ", ".join(models) if len(models) <= 4 else f"{len(models)} models ({next(iter(models))}, ...)"
    fitted = fit_step_model(pd.DataFrame(rows).assign(context=context), stream, method=f"fitted on {label}")
    if check:
        fitted.check = judged(check, fitted, {(n, t): measured[n, t] for n in check for t in tokens}, context, others)
    return fitted
