"""Statistics every verdict uses: prompt-level bootstrap intervals, verdicts, and a loop detector.

- ``distinct_ngram_ratio(tokens, n=4)``: distinct n-grams / n-grams of a token sequence; near 1
  for language, low for a loop (the zoo target's greedy continuations score 0.06-0.2).
- ``bootstrap_ci(samples, statistic)``: a point estimate and a 95% interval by resampling prompts
  (``scipy.stats.bootstrap``, paired: one prompt's measurements move together, BCa by default).
- ``paired_speedup(runs, method, baseline)``: pooled throughput ratio of two methods measured on
  the same prompts in one interleaved run, with its prompt-level CI, the number of prompts and
  runs, and the spread of the ratio between runs.
- ``verdict(low, high, threshold)``: "held" when the CI clears the threshold, "not held" when it
  lies below, "inconclusive" when it straddles.
- ``k_star_set(table)``: every k whose CI overlaps the best k's (the K* a reader can rely on).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _stats

__all__ = ["distinct_ngram_ratio", "bootstrap_ci", "paired_speedup", "pooled_alpha", "verdict", "k_star_set", "VERDICTS"]

VERDICTS = ("held", "not held", "inconclusive")


def distinct_ngram_ratio(tokens: Sequence[int], n: int = 4) -> float:
    """Distinct n-grams over all n-grams of ``tokens`` (nan when shorter than n)."""
    tokens = list(tokens)
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Callable[..., float], *, confidence: float = 0.95,
                 n_resamples: int = 2000, seed: int = 0, method: str = "BCa") -> tuple[float, float, float]:
    """(estimate, low, high): ``statistic(*samples)`` and its bootstrap interval, the samples
    resampled together (paired) along their one axis, the prompts."""
    arrays = [np.asarray(s, dtype=float) for s in samples]
    if len({len(a) for a in arrays}) != 1 or len(arrays[0]) < 2:
        raise ValueError("bootstrap_ci needs paired samples of one length >= 2 (one value per prompt)")
    estimate = float(statistic(*arrays))
    if all(np.all(a == a[0]) for a in arrays):  # no spread: the interval is the point
        return estimate, estimate, estimate
    def interval(how: str) -> tuple[float, float, bool]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = _stats.bootstrap(arrays, statistic, paired=True, vectorized=False, confidence_level=confidence,
                                   n_resamples=n_resamples, method=how, rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        return low, high, bool(caught) or not (np.isfinite(low) and np.isfinite(high))

    low, high, degenerate = interval(method)
    if degenerate and method != "percentile":  # BCa cannot be computed on few or near-constant prompts
        low, high, _ = interval("percentile")
    return estimate, low, high


def _ratio(tok_m, sec_m, tok_b, sec_b) -> float:
    return (tok_m.sum() / sec_m.sum()) / (tok_b.sum() / sec_b.sum())


def paired_speedup(runs: pd.DataFrame, method: str, baseline: str, *, tokens: str = "decode_tokens",
                   seconds: str = "decode_seconds", confidence: float = 0.95, seed: int = 0) -> dict:
    """Throughput of ``method`` over ``baseline`` (sum tokens / sum seconds, each), from rows with
    columns run, prompt, method, ``tokens``, ``seconds``. Per prompt, tokens and seconds are summed
    over runs; the CI resamples prompts (nan with one prompt). ``run_min`` / ``run_max``: the ratio
    within each run alone."""
    for col in ("run", "prompt", "method", tokens, seconds):
        if col not in runs:
            raise ValueError(f"runs needs a {col!r} column (one row per run, prompt and method)")
    methods = set(runs["method"])
    for m in (method, baseline):
        if m not in methods:
            raise ValueError(f"{m!r} is not among the measured methods {sorted(methods)}")
    per = runs[runs["method"].isin([method, baseline])].pivot_table(index=["run", "prompt"], columns="method",
                                                                     values=[tokens, seconds], aggfunc="sum")
    per = per.dropna()
    by_prompt = per.groupby(level="prompt").sum()
    columns = [by_prompt[(tokens, method)], by_prompt[(seconds, method)], by_prompt[(tokens, baseline)], by_prompt[(seconds, baseline)]]
    if len(by_prompt) < 2:  # one prompt: a point, no interval over prompts
        est, low, high = _ratio(*(c.to_numpy() for c in columns)), float("nan"), float("nan")
    else:
        est, low, high = bootstrap_ci(columns, _ratio, confidence=confidence, seed=seed)
    per_run = [_ratio(g[(tokens, method)].values, g[(seconds, method)].values, g[(tokens, baseline)].values,
                      g[(seconds, baseline)].values) for _, g in per.groupby(level="run")]
    return {"method": method, "baseline": baseline, "speedup": est, "ci_low": low, "ci_high": high,
            "n_prompts": len(by_prompt), "n_runs": len(per_run), "run_min": float(min(per_run)), "run_max": float(max(per_run))}


def pooled_alpha(runs: pd.DataFrame, method: str, *, confidence: float = 0.95, seed: int = 0) -> dict:
    """Accepted over judged draft tokens of ``method`` pooled over prompts and runs, with a
    prompt-level CI (columns ``accepted`` and ``judged``)."""
    g = runs[runs["method"] == method].groupby("prompt")[["accepted", "judged"]].sum()
    g = g[g["judged"] > 0]
    if len(g) < 2:
        return {"alpha": float(g["accepted"].sum() / g["judged"].sum()) if len(g) else float("nan"),
                "alpha_low": float("nan"), "alpha_high": float("nan")}
    est, low, high = bootstrap_ci([g["accepted"], g["judged"]], lambda a, j: a.sum() / j.sum(), confidence=confidence, seed=seed)
    return {"alpha": est, "alpha_low": low, "alpha_high": high}


def verdict(low: float, high: float, threshold: float, *, higher_is_claim: bool = True) -> str:
    """"held" if the CI [low, high] lies on the claim's side of ``threshold``, "not held" if it lies
    on the other side, "inconclusive" if it straddles it. ``higher_is_claim``: the claim is
    "value >= threshold" (else "value <= threshold"). No interval (nan) is "inconclusive"."""
    if np.isnan(low) or np.isnan(high):
        return "inconclusive"
    if not low <= high:
        raise ValueError(f"need low <= high; got [{low}, {high}]")
    if not higher_is_claim:
        low, high, threshold = -high, -low, -threshold
    if low >= threshold:
        return "held"
    if high < threshold:
        return "not held"
    return "inconclusive"


def k_star_set(table: pd.DataFrame, *, k: str = "k", estimate: str = "speedup", low: str = "ci_low",
               high: str = "ci_high") -> list[int]:
    """The k whose CI overlaps the CI of the k with the best estimate, ascending."""
    if table.empty:
        raise ValueError("k_star_set needs at least one row")
    best = table.loc[table[estimate].idxmax()]
    return sorted(int(v) for v in table.loc[table[high] >= best[low], k])
