"""The planner's prediction from replayed acceptance: each calibration prompt's decode time as a
sum over what its replay did (``runs``), priced at the costs measured on this machine (``costs``),
and a bootstrap prediction interval for a new set of prompts.

For one prompt replayed at k (``runs.replay_features``: I drafting iterations, P plain target
steps, sum k' proposed tokens, n_k' iterations that proposed k' tokens; k' < k where the tokens
left cap k, or where a prompt-lookup source finds fewer), in target decode steps:

    T_spec = pre + c_k * sum k' + sum_k' n_k' * v_k' + P + (I + P) * l_k
    T_ar   = (N - 1) * (1 + l_ar)                      (N new tokens; the first is the prefill's)

pre is the draft's prefill (inside the decode time: it runs after the first token), c_k the
draft's time per proposed token, v_k' the target's forward over k' + 1 tokens, l_k the loop's time
outside the forwards per iteration and l_ar the autoregressive loop's per token, each divided by
one target decode step. Over a set of prompts the predicted speedup is sum T_ar / sum T_spec: the
ratio of pooled decode tokens/s that ``planner.validate`` measures. Nothing assumes i.i.d.
acceptance (Leviathan et al. 2023, Eq. 1): runs of acceptance stay where the prompts put them.

Prediction interval (``forecast``), for the pooled speedup over ``n_prompts`` new prompts: a
two-stage bootstrap (Davison & Hinkley 1997, *Bootstrap Methods and their Application*, §6.3.3,
prediction of a new observation). Each replicate resamples the calibration prompts (the
uncertainty of what was learned from them), draws ``n_prompts`` prompts from that resample (the
spread of a new set), and resamples the cost blocks (timing noise) before taking the medians; the
interval is the replicates' central ``level`` quantiles.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["FEATURES", "cost_table", "cost_medians", "pooled_verify", "steps_spec", "forecast"]

FEATURES = ("iterations", "plain", "proposed", "accepted", "judged")  # then n_k' for k' = 1 .. k_max


def cost_table(blocks: Sequence[Mapping], ks: Sequence[int], k_max: int) -> pd.DataFrame:
    """Per-block costs (one row per calibration block; columns pre, loop_ar, c_k, loop_k for k in
    ``ks`` and v_k' for k' = 1 .. ``k_max``, in target steps). Columns a block did not measure are
    NaN; a missing v_k' column is filled by the medians' interpolation in ``_medians``."""
    rows = []
    for b in blocks:
        row = {"pre": b.get("pre", 0.0), "loop_ar": b.get("loop_ar", 0.0)}
        row.update({f"c_{k}": b["c"].get(k, np.nan) for k in ks})
        row.update({f"loop_{k}": b["loop"].get(k, np.nan) for k in ks})
        row.update({f"v_{j}": b["v"].get(j, np.nan) for j in range(1, k_max + 1)})
        rows.append(row)
    if not rows:
        raise ValueError("no cost blocks: calibrate at least one prompt and one draft")
    return pd.DataFrame(rows, dtype=float)


def _medians(table: np.ndarray, columns: list[str], k_max: int, fallback: np.ndarray | None = None) -> np.ndarray:
    """Column medians of ``table`` (..., blocks, columns) ignoring NaN. A v_k' that no block
    measured is taken from ``fallback`` (k_max,) (the target's verify costs pooled over every
    draft's blocks: they depend on the target alone), else interpolated linearly in k' from the
    measured ones (constant beyond the ends)."""
    with warnings.catch_warnings():  # a column no block measured is an all-NaN slice
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(table, axis=-2)  # (..., columns)
    v_cols = [columns.index(f"v_{j}") for j in range(1, k_max + 1)]
    v = med[..., v_cols]
    if fallback is not None:
        v = np.where(np.isnan(v), np.asarray(fallback, dtype=float), v)
    if np.isnan(v).any():
        if not (~np.isnan(v)).any(axis=-1).all():
            raise ValueError("no verify cost was measured for any k' (the draft never proposed on the cost prompts); "
                             "calibrate with more cost_prompts or with a model draft beside it")
        xs = np.arange(1, k_max + 1)
        flat = v.reshape(-1, k_max).copy()
        for row in flat:
            ok = ~np.isnan(row)
            row[~ok] = np.interp(xs[~ok], xs[ok], row[ok])
        v = flat.reshape(v.shape)
    med[..., v_cols] = v
    return med


def pooled_verify(tables: Sequence[pd.DataFrame]) -> np.ndarray:
    """(k_max,) median verify cost per k' over the blocks of every table (every draft)."""
    cols = [c for c in tables[0].columns if c.startswith("v_")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.concatenate([t[cols].to_numpy(float) for t in tables]), axis=0)


def cost_medians(costs: pd.DataFrame, fallback: np.ndarray | None = None) -> pd.Series:
    """The costs the point prediction uses: medians over blocks, v_k' filled as in ``_medians``."""
    columns = list(costs.columns)
    k_max = sum(c.startswith("v_") for c in columns)
    return pd.Series(_medians(costs.to_numpy(float), columns, k_max, fallback), index=columns)


def steps_spec(sums: np.ndarray, med: np.ndarray, columns: list[str], k: int, k_max: int, prompts) -> np.ndarray:
    """T_spec of the module docstring summed over prompts: ``sums`` (..., features) are the summed
    replay features, ``med`` (..., columns) the costs, ``prompts`` how many prompts the sums hold
    (the draft's prefill is paid once per prompt)."""
    col = {c: i for i, c in enumerate(columns)}
    it, plain, prop = sums[..., 0], sums[..., 1], sums[..., 2]
    per_k = sums[..., len(FEATURES): len(FEATURES) + k_max]  # (..., k_max)
    v = med[..., [col[f"v_{j}"] for j in range(1, k_max + 1)]]
    return (prompts * med[..., col["pre"]] + med[..., col[f"c_{k}"]] * prop + (per_k * v).sum(-1) + plain
            + (it + plain) * med[..., col[f"loop_{k}"]])


def forecast(features: Mapping[int, np.ndarray], costs: pd.DataFrame, decode_tokens: np.ndarray, *,
             n_prompts: int | None = None, level: float = 0.9, resamples: int = 2000, seed: int = 0,
             verify_fallback: np.ndarray | None = None) -> pd.DataFrame:
    """Predicted pooled speedup per k and its ``level`` prediction interval for ``n_prompts`` new
    prompts (default: as many as were calibrated).

    ``features``: per k an (n_prompts_calibrated, 5 + k_max) array of ``runs.replay_features``;
    ``costs``: ``cost_table`` of the draft's blocks; ``decode_tokens``: (n,) N - 1 per prompt;
    ``verify_fallback``: v_k' where the draft's blocks measured none (``pooled_verify``).
    Returns one row per k: predicted_speedup (all prompts, median costs), predicted_lo,
    predicted_hi, tokens_per_iteration and acceptance_rate (replayed)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.9; got {level!r}")
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100 for a {level:.0%} interval; got {resamples}")
    decode_tokens = np.asarray(decode_tokens, dtype=float)
    n = len(decode_tokens)
    m = n if n_prompts is None else int(n_prompts)
    if m < 1:
        raise ValueError(f"n_prompts must be >= 1; got {n_prompts!r}")
    columns = list(costs.columns)
    table = costs.to_numpy(float)  # (blocks, columns)
    k_max = sum(c.startswith("v_") for c in columns)
    rng = np.random.default_rng(seed)
    stage1 = rng.integers(0, n, size=(resamples, n))  # calibration prompts, resampled
    picks = np.take_along_axis(stage1, rng.integers(0, n, size=(resamples, m)), axis=1)  # a new set of m prompts
    weights = np.zeros((resamples, n))
    np.add.at(weights, (np.arange(resamples)[:, None], picks), 1.0)  # (B, n) multiplicity of each prompt
    blocks = table[rng.integers(0, len(table), size=(resamples, len(table)))]  # (B, blocks, columns)
    med_all = _medians(table, columns, k_max, verify_fallback)
    v_all = med_all[[i for i, c in enumerate(columns) if c.startswith("v_")]]
    med_b = _medians(blocks, columns, k_max, v_all)  # a resample without some v_k' takes the point estimate's
    col = {c: i for i, c in enumerate(columns)}
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    rows = []
    for k, f in sorted(features.items()):
        f = np.asarray(f, dtype=float)
        if f.shape[0] != n:
            raise ValueError(f"features[{k}] has {f.shape[0]} prompts; decode_tokens has {n}")
        ar = decode_tokens.sum() * (1 + med_all[col["loop_ar"]])
        point = ar / steps_spec(f.sum(0), med_all, columns, k, k_max, n)
        sums = weights @ f  # (B, features)
        ar_b = (weights @ decode_tokens) * (1 + med_b[:, col["loop_ar"]])
        boot = ar_b / steps_spec(sums, med_b, columns, k, k_max, m)
        it, acc, judged = f[:, 0].sum(), f[:, 3].sum(), f[:, 4].sum()
        rows.append({"k": int(k), "predicted_speedup": float(point), "predicted_lo": float(np.quantile(boot, lo_q)),
                     "predicted_hi": float(np.quantile(boot, hi_q)),
                     "tokens_per_iteration": float((acc + it) / it) if it else float("nan"),
                     "acceptance_rate": float(acc / judged) if judged else float("nan")})
    return pd.DataFrame(rows)
