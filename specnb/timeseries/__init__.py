"""Speculative forecasting with a compact Timer-XL-like patch transformer on ETTh1 (notebook 06).

- ``data``: ETTh1 / ETTh2 located or downloaded with sha256 checks, the standard 12/4/4-month
  split standardised on train rows, channel-independent windows; PATCH, CONTEXT, HORIZONS.
- ``model``: ``TSConfig``, ``scaled_config`` and ``PatchTransformer`` (causal, RoPE, next-patch
  head; Timer-XL, Liu et al. ICLR 2025), plus RevIN-style ``instance_norm``.
- ``forecast``: ``target_forecast`` and ``speculative_forecast`` (tolerance or Gaussian acceptance)
  in one fixed-shape buffer, returning a ``Forecast`` with decoding statistics.
- ``experiments``: ``evaluate_forecasts``, interleaved timing, the component breakdown and the study
  tables notebook 06 calls.
- ``training``: the presets ``MODELS``, ``train`` (resumable), ``save_model`` / ``load_model``.
- ``cli`` (+ ``__main__``): ``python -m specnb.timeseries train [NAME ...]``.

Every public name is re-exported here, so ``import specnb.timeseries as ts; ts.X`` works; a
test that monkeypatches a module global must patch the submodule that reads it (e.g. ``data``).
"""

from .data import (CACHE_DIR, CONTEXT, DATA_ENV, ETT_FILES, HORIZONS, MONTH, PATCH, SHARED_DATA, fetch_url,
                   load_ett, locate_ett, make_windows, sha256_of, split_ett)
from .model import MLP, Attention, Block, PatchTransformer, TSConfig, instance_norm, scaled_config
from .forecast import Forecast, score, speculative_forecast, target_forecast
from .experiments import (forecast_component_times, evaluate_forecasts, horizon_table, progression_table, scaling_table,
                          speed_methods, summarize_times, time_interleaved, timing_batch, tradeoff_table)
from .training import MODELS, TRAIN_PATCHES, TS_DIR, load_model, save_model, train
from .cli import main

__all__ = [
    "PATCH", "CONTEXT", "HORIZONS", "MONTH", "ETT_FILES", "DATA_ENV", "SHARED_DATA", "CACHE_DIR", "TS_DIR", "MODELS",
    "TRAIN_PATCHES", "sha256_of", "fetch_url", "locate_ett", "load_ett", "split_ett", "make_windows",
    "TSConfig", "scaled_config", "Attention", "MLP", "Block", "PatchTransformer",
    "Forecast", "instance_norm", "score", "target_forecast", "speculative_forecast",
    "evaluate_forecasts", "forecast_component_times", "time_interleaved", "summarize_times", "timing_batch", "speed_methods",
    "horizon_table", "tradeoff_table", "progression_table", "scaling_table",
    "train", "save_model", "load_model", "main",
]
