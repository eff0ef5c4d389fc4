"""Speculative forecasting with a compact Timer-XL-like patch transformer on ETTh1 (notebook 06).

- ``data``: ETTh1 / ETTh2 located or downloaded with sha256 checks, the standard 12/4/4-month
  split standardised on train rows, channel-independent windows; PATCH, CONTEXT, HORIZONS.
- ``model``: ``TSConfig``, ``scaled_config`` and ``PatchTransformer`` (causal, RoPE, next-patch
  head; Timer-XL, Liu et al. ICLR 2025) with a per-row ``KVCache``, plus RevIN-style ``instance_norm``.
- ``forecast``: ``target_forecast`` and ``speculative_forecast`` (tolerance, Gaussian or seed 001's
  combined acceptance), KV-cached (or re-scoring a fixed-shape buffer), returning a ``Forecast``.
- ``experiments``: per-window errors with CIs, interleaved per-batch timing with paired speedup
  CIs, the component breakdown and the study tables notebook 06 calls.
- ``training``: the presets ``MODELS``, ``train`` (resumable, pooled datasets), ``save_model`` / ``load_model``.
- ``verdicts``: the verdict rows, built from the result frames; ``figures``: notebook 06's plots.
- ``cli`` (+ ``__main__``): ``python -m specnb.timeseries train [NAME ...]``.

Every public name is re-exported here, so ``import specnb.timeseries as ts; ts.X`` works; a
test that monkeypatches a module global must patch the submodule that reads it (e.g. ``data``).
"""

from .data import (CACHE_DIR, CONTEXT, DATA_ENV, ETT_FILES, HORIZONS, MONTH, PATCH, SHARED_DATA, fetch_url,
                   load_ett, locate_ett, make_windows, sha256_of, split_ett)
from .model import (MLP, Attention, Block, EnsembleCache, KVCache, PatchEnsemble, PatchTransformer, TSConfig, instance_norm,
                    new_cache, scaled_config)
from .forecast import RULES, Forecast, score, speculative_forecast, target_forecast
from .experiments import (acceptance_ci, decode_costs, evaluate_forecasts, forecast_component_times, forecast_runs, progression_table, quality_table,
                          scaling_table, speculative_table, speed_summary, timing_batch, window_batches, window_errors)
from .training import MODELS, TRAIN_PATCHES, TS_DIR, load_model, save_model, train, train_ensemble
from .verdicts import combine, iqr_ratio, paying_settings, verdict_table
from . import figures
from .cli import main

__all__ = [
    "PATCH", "CONTEXT", "HORIZONS", "MONTH", "ETT_FILES", "DATA_ENV", "SHARED_DATA", "CACHE_DIR", "TS_DIR", "MODELS",
    "TRAIN_PATCHES", "sha256_of", "fetch_url", "locate_ett", "load_ett", "split_ett", "make_windows",
    "TSConfig", "scaled_config", "Attention", "MLP", "Block", "PatchTransformer", "PatchEnsemble", "KVCache", "EnsembleCache", "new_cache", "RULES",
    "Forecast", "instance_norm", "score", "target_forecast", "speculative_forecast",
    "window_errors", "evaluate_forecasts", "acceptance_ci", "decode_costs", "quality_table", "window_batches", "forecast_runs", "speed_summary",
    "forecast_component_times", "timing_batch", "speculative_table", "progression_table", "scaling_table",
    "combine", "iqr_ratio", "paying_settings", "verdict_table", "figures",
    "train", "train_ensemble", "save_model", "load_model", "main",
]
