"""Prompt-level bootstrap intervals, verdicts, the loop detector and K* sets (specnb.stats)."""

import numpy as np
import pandas as pd
import pytest

from specnb.stats import bootstrap_ci, distinct_ngram_ratio, k_star_set, paired_speedup, pooled_alpha, verdict


def _runs(ratio: float, n_prompts: int = 20, runs: int = 3, noise: float = 0.05, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(runs):
        for p in range(n_prompts):
            base = rng.uniform(1, 5)  # prompts differ far more than runs
            tokens = int(rng.integers(20, 100))
            rows.append({"run": r, "prompt": p, "method": "base", "decode_tokens": tokens, "decode_seconds": base})
            rows.append({"run": r, "prompt": p, "method": "fast", "decode_tokens": tokens,
                         "decode_seconds": base / ratio * rng.uniform(1 - noise, 1 + noise),
                         "accepted": tokens // 2, "judged": tokens})
    return pd.DataFrame(rows)


def test_distinct_ngram_ratio_tells_loops_from_text():
    assert distinct_ngram_ratio(list(range(20))) == 1.0
    assert distinct_ngram_ratio([7, 8] * 10) == pytest.approx(2 / 17)
    assert np.isnan(distinct_ngram_ratio([1, 2, 3]))


def test_paired_speedup_recovers_the_ratio_and_covers_it():
    s = paired_speedup(_runs(1.8), "fast", "base")
    assert s["n_prompts"] == 20 and s["n_runs"] == 3
    assert s["ci_low"] < 1.8 < s["ci_high"] and s["ci_high"] - s["ci_low"] < 0.2
    assert s["run_min"] <= s["speedup"] <= s["run_max"]
    noisy = paired_speedup(_runs(1.8, noise=0.6), "fast", "base")
    assert noisy["ci_high"] - noisy["ci_low"] > s["ci_high"] - s["ci_low"]
    with pytest.raises(ValueError, match="not among"):
        paired_speedup(_runs(1.8), "slow", "base")
    one = paired_speedup(_runs(1.8, n_prompts=1), "fast", "base")  # one prompt: a point, no interval
    assert one["n_prompts"] == 1 and abs(one["speedup"] - 1.8) < 0.2 and np.isnan(one["ci_low"]) and np.isnan(one["ci_high"])


def test_bootstrap_interval_has_its_nominal_coverage():
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(200):
        x = rng.exponential(2.0, 25)
        _, low, high = bootstrap_ci([x], np.mean, n_resamples=500, seed=i)
        hits += low <= 2.0 <= high
    assert 0.85 <= hits / 200 <= 0.99


def test_pooled_alpha_and_degenerate_samples():
    a = pooled_alpha(_runs(1.5), "fast")
    assert a["alpha_low"] <= a["alpha"] <= a["alpha_high"] and a["alpha"] == pytest.approx(0.5, abs=0.02)
    assert bootstrap_ci([np.ones(5)], np.mean) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="one length"):
        bootstrap_ci([np.ones(5), np.ones(4)], lambda a, b: 0.0)


def test_verdict_needs_the_whole_interval():
    assert verdict(1.1, 1.4, 1.0) == "held"
    assert verdict(0.9, 1.4, 1.0) == "inconclusive"
    assert verdict(0.5, 0.9, 1.0) == "not held"
    assert verdict(0.5, 0.9, 1.0, higher_is_claim=False) == "held"
    assert verdict(float("nan"), float("nan"), 1.0) == "inconclusive"
    with pytest.raises(ValueError):
        verdict(2.0, 1.0, 1.5)


def test_k_star_set_is_every_k_that_overlaps_the_best():
    t = pd.DataFrame({"k": [1, 2, 3, 4], "speedup": [1.2, 1.5, 1.55, 1.3],
                      "ci_low": [1.1, 1.4, 1.45, 1.2], "ci_high": [1.3, 1.6, 1.65, 1.39]})
    assert k_star_set(t) == [2, 3]
