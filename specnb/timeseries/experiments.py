"""The measurements of notebook 06: forecast quality with CIs over windows, interleaved wall-clock
timing with paired speedup CIs over batches, the per-component time breakdown, and the study
tables built from them.

- ``window_errors`` / ``evaluate_forecasts`` / ``quality_table``: MSE / MAE per window of a scaled
  split, with bootstrap CIs over windows and paired ratios to a reference model.
- ``window_batches`` / ``forecast_runs`` / ``speed_summary``: disjoint batches of windows, methods
  interleaved and rotated per (run, batch), the paired speedup (``specnb.stats.paired_speedup``).
- ``forecast_component_times`` / ``scaling_table``: seed 000's breakdown of a forward pass (embedding,
  blocks, attention, MLP, norms, head, other) per model size.
- ``speculative_table``, ``progression_table``: target-only vs speculative per horizon and
  variant (drafts, tolerances), and seed 001's draft progression under several rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ..stats import bootstrap_ci, paired_speedup
from ..timing import benchmark_op, rotated, synchronize
from .data import CONTEXT, HORIZONS, make_windows
from .forecast import Forecast, speculative_forecast, target_forecast
from ..models import count_parameters
from .model import PatchTransformer, instance_norm, new_cache

__all__ = ["window_errors", "evaluate_forecasts", "acceptance_ci", "quality_table", "window_batches", "forecast_runs", "speed_summary",
           "forecast_component_times", "timing_batch", "speculative_table", "decode_costs", "progression_table", "scaling_table"]


def window_errors(target: PatchTransformer, series: np.ndarray, horizon: int, *, draft: PatchTransformer | None = None,
                  context: int = CONTEXT, stride: int = 1, batch_size: int = 2048, progress: bool = False,
                  **spec) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per window (all channels of one start row): mean squared and absolute error, arrays (n,),
    on every ``stride``-th window of ``series`` (scaled); speculative when ``draft`` is given
    (``spec`` = k, rule, tol, bias, sigma, seed, cache), else target-only. Plus decoding statistics."""
    channels = series.shape[1]
    windows = make_windows(series, context + horizon, stride)  # (n * C, context + horizon), window-major
    se, ae, acc, prop = [], [], [], []
    stats = dict(target_calls=0, draft_calls=0, proposed=0, accepted=0, emitted=0)
    chunks = list(torch.split(windows, batch_size - batch_size % channels))
    for chunk in tqdm(chunks, desc=f"H={horizon}", disable=not progress, leave=False):
        ctx, truth = chunk[:, :context], chunk[:, context:]
        fc = speculative_forecast(target, draft, ctx, horizon, **spec) if draft is not None else target_forecast(target, ctx, horizon)
        err = (fc.values - truth).view(-1, channels, horizon)  # (windows, C, H)
        se.append(err.pow(2).mean((1, 2)).numpy())
        ae.append(err.abs().mean((1, 2)).numpy())
        if fc.row_proposed is not None:
            prop.append(fc.row_proposed.view(-1, channels).sum(1).numpy())
            acc.append(fc.row_accepted.view(-1, channels).sum(1).numpy())
        for key in stats:
            stats[key] += getattr(fc, key)
    if prop:  # per-window acceptance counts, for a CI over windows
        stats["window_proposed"], stats["window_accepted"] = np.concatenate(prop), np.concatenate(acc)
    return np.concatenate(se), np.concatenate(ae), stats


def evaluate_forecasts(target: PatchTransformer, series: np.ndarray, horizon: int, *, draft: PatchTransformer | None = None,
                       context: int = CONTEXT, stride: int = 1, batch_size: int = 2048, progress: bool = False,
                       **spec) -> dict:
    """MSE / MAE on every ``stride``-th window of ``series`` (scaled), all channels, with a
    bootstrap 95% CI of the MSE over windows (``window_errors``); speculative when ``draft`` is
    given, else target-only."""
    se, ae, stats = window_errors(target, series, horizon, draft=draft, context=context, stride=stride,
                                  batch_size=batch_size, progress=progress, **spec)
    mse, low, high = bootstrap_ci([se], np.mean, method="percentile") if len(se) > 1 else (float(se.mean()),) + (float("nan"),) * 2
    alpha = acceptance_ci(stats)
    counts = {k: v for k, v in stats.items() if not k.startswith("window_")}
    return {"horizon": horizon, "windows": len(se), "series": len(se) * series.shape[1], "mse": mse, "mse_low": low,
            "mse_high": high, "mae": float(ae.mean()), **alpha, **counts}


def acceptance_ci(stats: Mapping) -> dict:
    """Accepted over proposed draft patches, pooled, with a bootstrap 95% CI over windows
    (``window_errors``' per-window counts); NaN when nothing was proposed."""
    prop, acc = stats.get("window_proposed"), stats.get("window_accepted")
    if prop is None or prop.sum() == 0:
        return {"acceptance": float("nan"), "acceptance_low": float("nan"), "acceptance_high": float("nan")}
    keep = prop > 0
    if keep.sum() < 2:
        return {"acceptance": float(acc.sum() / prop.sum()), "acceptance_low": float("nan"), "acceptance_high": float("nan")}
    est, low, high = bootstrap_ci([acc[keep], prop[keep]], lambda a, p: a.sum() / p.sum(), method="percentile")
    return {"acceptance": est, "acceptance_low": low, "acceptance_high": high}


def _mse_ci(se: np.ndarray, ref: np.ndarray) -> tuple[tuple, tuple]:
    """(mean, low, high) of per-window MSEs, and of their ratio to ``ref``'s on the same windows
    (paired), each a percentile bootstrap CI over windows."""
    return (bootstrap_ci([se], np.mean, method="percentile"),
            bootstrap_ci([se, ref], lambda x, y: x.mean() / y.mean(), method="percentile"))


def quality_table(models: Mapping[str, PatchTransformer], series: np.ndarray, horizons=HORIZONS, *, reference: str = "target",
                  stride: int = 24, context: int = CONTEXT, progress: bool = True) -> pd.DataFrame:
    """Every model alone as a forecaster, per horizon: MSE with a CI over windows, MAE, and the
    MSE ratio to ``reference`` on the same windows with a paired bootstrap CI (below 1: better)."""
    rows = []
    for h in tqdm(horizons, desc="test MSE", disable=not progress, leave=False):
        errs = {n: window_errors(m, series, h, context=context, stride=stride) for n, m in models.items()}
        ref = errs[reference][0]
        for name, (se, ae, _) in errs.items():
            (mse, low, high), ratio = _mse_ci(se, ref)
            rows.append({"model": name, "horizon": h, "windows": len(se), "mse": mse, "mse_low": low, "mse_high": high,
                         "mae": float(ae.mean()), f"mse_vs_{reference}": ratio[0], "ratio_low": ratio[1], "ratio_high": ratio[2]})
    return pd.DataFrame(rows)


def window_batches(series: np.ndarray, n: int, windows_per_batch: int = 1, context: int = CONTEXT,
                   horizon: int = max(HORIZONS)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` disjoint groups of evenly spaced windows (``windows_per_batch`` each, all channels):
    a list of (contexts (w * C, context), truths (w * C, horizon)), the units a speed CI resamples."""
    starts = np.linspace(0, len(series) - context - horizon, n * windows_per_batch).round().astype(int)
    rng = np.random.default_rng(0)
    starts = rng.permutation(starts).reshape(n, windows_per_batch)  # every group spans the whole split
    out = []
    for group in starts:
        x = torch.from_numpy(np.stack([series[s: s + context + horizon].T for s in group]))  # (w, C, T)
        x = x.reshape(-1, context + horizon).contiguous()
        out.append((x[:, :context].contiguous(), x[:, context:].contiguous()))
    return out


def forecast_runs(methods: Mapping[str, Callable[[torch.Tensor, int], Forecast]], batches, horizon: int, *,
                  runs: int = 3, progress: bool = True) -> pd.DataFrame:
    """Wall-clock of every method on every batch (``window_batches``), ``runs`` times, methods
    interleaved and rotated per (run, batch) after one untimed warm-up per method. One row per
    (run, prompt = batch, method): seconds, points forecast, MSE of that batch, decoding counts."""
    names = list(methods)
    if len(batches) < 2 or runs < 1:
        raise ValueError("need >= 2 batches (the CI resamples them) and >= 1 run")
    for name in names:
        methods[name](batches[0][0], horizon)
    rows = []
    bar = tqdm(total=runs * len(batches) * len(names), desc=f"timing H={horizon}", disable=not progress, leave=False)
    for r in range(runs):
        for b, (ctx, truth) in enumerate(batches):
            for name in rotated(names, r * len(batches) + b):
                synchronize(None)  # every CUDA device in use (the models may sit elsewhere than ctx)
                start = time.perf_counter()
                fc = methods[name](ctx, horizon)
                synchronize(None)  # every CUDA device in use (the models may sit elsewhere than ctx)
                sec = time.perf_counter() - start
                rows.append({"run": r, "prompt": b, "method": name, "seconds": sec, "points": fc.values.numel(),
                             "mse": float((fc.values - truth[:, :horizon]).pow(2).mean()), "target_calls": fc.target_calls,
                             "draft_calls": fc.draft_calls, "proposed": fc.proposed, "accepted": fc.accepted})
                bar.update()
    bar.close()
    return pd.DataFrame(rows)


def speed_summary(runs: pd.DataFrame, baseline: str = "target-only") -> pd.DataFrame:
    """Per method: the paired speedup over ``baseline`` (points/s, ``specnb.stats.paired_speedup``:
    CI over batches, spread over runs), acceptance, and the MSE ratio to the baseline's with a
    paired CI over batches."""
    rows = []
    per = runs.groupby(["prompt", "method"])[["mse", "proposed", "accepted"]].mean().unstack("method")
    for method in runs["method"].unique():
        sp = paired_speedup(runs, method, baseline, tokens="points", seconds="seconds")
        ratio = bootstrap_ci([per[("mse", method)], per[("mse", baseline)]], lambda a, b: a.mean() / b.mean(), method="percentile")
        prop = per[("proposed", method)].sum()
        rows.append({**sp, "seconds_median": runs.loc[runs["method"] == method, "seconds"].median(),
                     "acceptance": per[("accepted", method)].sum() / prop if prop else float("nan"),
                     "mse": per[("mse", method)].mean(), "mse_ratio": ratio[0], "mse_ratio_low": ratio[1], "mse_ratio_high": ratio[2]})
    return pd.DataFrame(rows)


def _capture(model: PatchTransformer, x: torch.Tensor) -> dict[str, list[tuple[nn.Module, torch.Tensor]]]:
    """Inputs seen by each component during one forward, grouped as in seed 000's table."""
    groups = {"embedding": [model.embed], "blocks": list(model.blocks), "attention": [b.attn for b in model.blocks], "mlp": [b.mlp for b in model.blocks],
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
    model, de-norm of the next patch), the decoder blocks together ("blocks", seed 000's row), and
    each component on the inputs it sees, timed with torch.utils.benchmark (warm-up, median over
    blocked runs); "other" is the total less the five components. Seconds per batch."""
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
    parts = ("embedding", "attention", "mlp", "norms", "head")
    row["other"] = row["total"] - sum(row[p] for p in parts)  # residual adds, reshapes, de-norm, Python: what no component holds
    return row


def timing_batch(series: np.ndarray, n_windows: int, context: int = CONTEXT, horizon: int = max(HORIZONS)) -> torch.Tensor:
    """Contexts of ``n_windows`` evenly spaced windows, all channels: (n_windows * C, context)."""
    starts = np.linspace(0, len(series) - context - horizon, n_windows).round().astype(int)
    x = torch.from_numpy(np.stack([series[s: s + context].T for s in starts]))  # (n, C, context)
    return x.reshape(-1, context).contiguous()


def speculative_table(target: PatchTransformer, variants: Mapping[str, tuple[PatchTransformer, Mapping]], series: np.ndarray,
                      batches, horizons=HORIZONS, *, runs: int = 3, stride: int = 24, context: int = CONTEXT,
                      quality: bool = True, progress: bool = True) -> pd.DataFrame:
    """Per horizon, target-only (KV cache) and every speculative variant name -> (draft, keyword
    arguments of ``speculative_forecast``): speed interleaved over ``batches`` x ``runs``
    (``forecast_runs`` / ``speed_summary``: paired speedup with a CI over batches) and quality on every
    ``stride``-th window of ``series`` (MSE with a CI over windows, and the paired MSE ratio to
    target-only with its CI; skipped, NaN, when ``quality`` is False)."""
    rows = []
    nan3 = (float("nan"),) * 3
    for h in horizons:
        methods = {"target-only": lambda ctx, hh: target_forecast(target, ctx, hh)}
        for name, (draft, kw) in variants.items():
            methods[name] = lambda ctx, hh, d=draft, kw=dict(kw): speculative_forecast(target, d, ctx, hh, **kw)
        speed = speed_summary(forecast_runs(methods, batches, h, runs=runs, progress=progress)).set_index("method")
        ref_se = window_errors(target, series, h, context=context, stride=stride)[0] if quality else None
        for name in methods:
            sp = speed.loc[name]
            row = {"horizon": h, "method": name, "speedup": sp["speedup"], "ci_low": sp["ci_low"], "ci_high": sp["ci_high"],
                   "run_min": sp["run_min"], "run_max": sp["run_max"], "n_batches": sp["n_prompts"], "n_runs": sp["n_runs"],
                   "seconds_median": sp["seconds_median"], "acceptance": sp["acceptance"]}
            if quality:
                if name == "target-only":
                    se, stats = ref_se, {}
                else:
                    draft, kw = variants[name]
                    se, _, stats = window_errors(target, series, h, draft=draft, context=context, stride=stride, **kw)
                mse, ratio = _mse_ci(se, ref_se)
                row.update(acceptance_ci(stats), windows=len(se))
            else:
                mse = ratio = nan3
            row.update(mse=mse[0], mse_low=mse[1], mse_high=mse[2], mse_ratio=ratio[0], mse_ratio_low=ratio[1], mse_ratio_high=ratio[2])
            rows.append(row)
    return pd.DataFrame(rows)


def decode_costs(target: PatchTransformer, drafts: Mapping[str, PatchTransformer], batch_sizes, *, k: int = 3,
                 context: int = CONTEXT, patch: int | None = None, min_run_time: float = 0.3) -> pd.DataFrame:
    """What a speculative iteration costs, per batch size (series per call), KV-cached, timed with
    torch.utils.benchmark: the target's one-patch step, its verify of k + 1 patches (in target
    steps), and each draft's one-patch step relative to the target's (c). Leviathan et al.'s
    expected speedup (1 - a^(k+1)) / ((1 - a)(k c + v)) needs these three numbers."""
    patch = patch or target.cfg.patch
    n_ctx = context // patch
    rows = []
    for b in batch_sizes:
        x = torch.randn(b, n_ctx + k + 1, patch)

        def step_ms(model, width: int) -> float:
            kv = new_cache(model, b, x.shape[1], x)
            with torch.inference_mode():
                model(x[:, :n_ctx], pos=torch.arange(n_ctx).expand(b, -1), cache=kv)
            pos = torch.arange(n_ctx, n_ctx + width).expand(b, -1)

            @torch.inference_mode()
            def run():
                model(x[:, n_ctx:n_ctx + width], pos=pos, cache=kv)
            return _bench(run, min_run_time)["median_s"] * 1e3

        t1, tv = step_ms(target, 1), step_ms(target, k + 1)
        rows.append({"batch_series": b, "model": "target", "step_ms": t1, "c": 1.0, "verify_ms": tv, "verify_steps": tv / t1, "k": k})
        for name, d in drafts.items():
            td = step_ms(d, 1)
            rows.append({"batch_series": b, "model": name, "step_ms": td, "c": td / t1, "k": k})
    return pd.DataFrame(rows)


def progression_table(target: PatchTransformer, stages: Mapping[str, PatchTransformer], series: np.ndarray,
                      seed_rows: Mapping[str, tuple], rules: Mapping[str, Mapping], *, stride: int = 24,
                      alone_horizon: int = 96, spec_horizon: int = 720, context: int = CONTEXT) -> pd.DataFrame:
    """Seed 001's progression: per stage, the draft alone as a forecaster at H = ``alone_horizon``
    (MSE with a CI over windows, MAE) and its acceptance at H = ``spec_horizon`` under every rule
    name -> ``speculative_forecast`` keyword arguments (column ``acceptance_NAME``); ``seed_rows`` maps
    a stage (and "target") to seed 001's (MSE, MAE[, acceptance]), shown beside ours. The target
    closes the table."""
    rows = []
    for stage, model in {**stages, "target": target}.items():
        alone = evaluate_forecasts(model, series, alone_horizon, stride=stride, context=context)
        seed = tuple(seed_rows.get(stage, ())) + (float("nan"),) * 3
        row = {"stage": stage, "mse": alone["mse"], "mse_low": alone["mse_low"], "mse_high": alone["mse_high"], "mae": alone["mae"],
               "seed_mse": seed[0], "seed_mae": seed[1], "seed_acceptance": seed[2]}
        for rule, kw in rules.items():
            ev = {} if stage == "target" else evaluate_forecasts(target, series, spec_horizon, draft=model, stride=stride, context=context, **kw)
            for col in ("acceptance", "acceptance_low", "acceptance_high"):
                row[col.replace("acceptance", f"acceptance_{rule}")] = ev.get(col, float("nan"))
        rows.append(row)
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
    for col in ("total", "blocks", "attention", "mlp", "norms", "embedding", "head"):
        table[f"{col}_speedup"] = base[f"{col}_ms"] / table[f"{col}_ms"]
    return table
