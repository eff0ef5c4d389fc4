"""The measurements of notebook 06: forecast quality, interleaved wall-clock timing, the
per-component time breakdown, and the study tables built from them.

- ``evaluate_forecasts``: MSE / MAE (and acceptance) over sliding windows of a scaled split.
- ``time_interleaved`` / ``summarize_times``: ``specnb.timing.compare`` / ``summarize`` with
  forecasting columns: paired speedups over rotated, interleaved repeats.
- ``forecast_component_times`` / ``scaling_table``: seed 000's breakdown of a forward pass (embedding,
  attention, MLP, norms, head) per model size.
- ``horizon_table``, ``tradeoff_table``, ``progression_table``: target-only vs speculative per
  horizon, the tolerance dial, and seed 001's draft progression.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ..timing import benchmark_op, compare, summarize
from .data import CONTEXT, HORIZONS, make_windows
from .forecast import Forecast, speculative_forecast, target_forecast
from ..models import count_parameters
from .model import PatchTransformer, instance_norm

__all__ = ["evaluate_forecasts", "forecast_component_times", "time_interleaved", "summarize_times", "timing_batch", "speed_methods",
           "horizon_table", "tradeoff_table", "progression_table", "scaling_table"]


def evaluate_forecasts(target: PatchTransformer, series: np.ndarray, horizon: int, *, draft: PatchTransformer | None = None,
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


def _replay(calls: list[tuple[nn.Module, torch.Tensor]]) -> Callable[[], None]:
    @torch.inference_mode()
    def run():
        for mod, inp in calls:
            mod(inp)
    return run


def _bench(fn: Callable[[], object], min_run_time: float) -> dict:
    return benchmark_op(fn, min_run_time=min_run_time, warmup=2)


def forecast_component_times(model: PatchTransformer, context: torch.Tensor, min_run_time: float = 0.2) -> dict:
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
    """Contexts of ``n_windows`` evenly spaced windows, all channels: (n_windows * C, context)."""
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
    ``series`` (``evaluate_forecasts``) and speed on ``batch`` (interleaved ``time_interleaved``, paired speedup)."""
    rows = []
    for h in horizons:
        quality = {"target-only": evaluate_forecasts(target, series, h, stride=stride, context=context),
                   "speculative": evaluate_forecasts(target, series, h, draft=draft, stride=stride, context=context, **spec)}
        runs = time_interleaved(speed_methods(target, batch, h, {"speculative": (draft, spec)}), repeats=repeats)
        speed = summarize_times(runs, "target-only").set_index("method").drop(columns=["acceptance"])
        rows += [{**quality[m], "method": m, **speed.loc[m].to_dict()} for m in ("target-only", "speculative")]
    return pd.DataFrame(rows)


def tradeoff_table(target: PatchTransformer, draft: PatchTransformer, series: np.ndarray, batch: torch.Tensor,
                   tols, *, horizon: int = 720, k: int = 3, stride: int = 24, repeats: int = 5,
                   context: int = CONTEXT) -> pd.DataFrame:
    """The tolerance dial: per tolerance, acceptance and MSE/MAE (``evaluate_forecasts``) and the paired
    speedup over target-only, all tolerances timed in one interleaved run."""
    variants = {f"tol={t:g}": (draft, dict(k=k, rule="tolerance", tol=t)) for t in tols}
    quality = [{"method": n, "tol": kw["tol"], **evaluate_forecasts(target, series, horizon, draft=d, stride=stride, context=context, **kw)}
               for n, (d, kw) in variants.items()]
    runs = time_interleaved(speed_methods(target, batch, horizon, variants), repeats=repeats)
    speed = summarize_times(runs, "target-only").drop(columns=["acceptance", "target_calls", "draft_calls"])
    return pd.DataFrame(quality).merge(speed, on="method")


def progression_table(target: PatchTransformer, stages: Mapping[str, PatchTransformer], series: np.ndarray,
                      seed_rows: Mapping[str, tuple], *, stride: int = 24, alone_horizon: int = 96,
                      spec_horizon: int = 720, context: int = CONTEXT, **spec) -> pd.DataFrame:
    """Seed 001's progression: per stage, the draft alone as a forecaster at H = ``alone_horizon``
    (MSE, MAE) and its acceptance (and speculative MSE) at H = ``spec_horizon`` with ``spec``;
    ``seed_rows`` maps a stage (and "target") to seed 001's (MSE, MAE[, acceptance]), shown beside
    ours. The target closes the table."""
    rows = []
    for stage, model in stages.items():
        alone = evaluate_forecasts(model, series, alone_horizon, stride=stride, context=context)
        spec720 = evaluate_forecasts(target, series, spec_horizon, draft=model, stride=stride, context=context, **spec)
        seed = tuple(seed_rows.get(stage, ())) + (float("nan"),) * 3
        rows.append({"stage": stage, "mse": alone["mse"], "mae": alone["mae"], "acceptance": spec720["acceptance"],
                     "spec_mse_720": spec720["mse"], "seed_mse": seed[0], "seed_mae": seed[1], "seed_acceptance": seed[2]})
    alone = evaluate_forecasts(target, series, alone_horizon, stride=stride, context=context)
    seed = tuple(seed_rows.get("target", ())) + (float("nan"),) * 3
    rows.append({"stage": "target", "mse": alone["mse"], "mae": alone["mae"], "seed_mse": seed[0], "seed_mae": seed[1]})
    return pd.DataFrame(rows)


def scaling_table(models: Mapping[str, PatchTransformer], context: torch.Tensor, baseline: str = "target",
                  min_run_time: float = 0.2, progress: bool = True) -> pd.DataFrame:
    """Seed 000's table: sizes, per-batch forward ms, speedup vs ``baseline`` and the component
    breakdown (ms and speedup per component) for every model on one context batch."""
    rows = []
    for name, model in tqdm(models.items(), desc="component timing", disable=not progress, leave=False):
        t = forecast_component_times(model, context, min_run_time)
        cfg = model.cfg
        rows.append({"model": name, "scale": cfg.scale, "d_model": cfg.d_model, "n_heads": cfg.n_heads, "d_ff": cfg.d_ff,
                     "params": count_parameters(model), "batch_series": len(context),
                     **{f"{k}_ms": v * 1e3 for k, v in t.items()}})
    table = pd.DataFrame(rows)
    base = table.set_index("model").loc[baseline]
    for col in ("total", "attention", "mlp", "norms", "embedding", "head"):
        table[f"{col}_speedup"] = base[f"{col}_ms"] / table[f"{col}_ms"]
    return table
