"""Notebook measurements on tiny models: real behaviour, no timing assertions."""

import pytest
import torch

from specnb.measure import greedy_identity, pair_costs, predict_speedup, sampling_histograms, total_variation
from specnb.models import perturbed_copy, tiny_model
from specnb.plotting import render_trace


@pytest.fixture(scope="module")
def pair():
    t = tiny_model("llama", vocab_size=16, layers=2, init_std=0.5, seed=4)
    return t, perturbed_copy(t, 0.3, seed=1)


def test_greedy_identity_rows(pair):
    t, d = pair
    rows = greedy_identity(t, d, [torch.tensor([[1, 2, 3]]), torch.tensor([[5]])], ks=[1, 3], max_new_tokens=10, progress=False)
    assert len(rows) == 4 and rows["identical"].all()
    assert set(rows["k"]) == {1, 3}


def test_sampling_histograms_match_within_noise(pair):
    t, d = pair
    counts, tv = sampling_histograms(t, d, torch.tensor([[1, 2]]), runs=300, new_tokens=3, k=2, progress=False)
    assert list(tv["position"]) == [1, 2, 3]
    freq = counts.groupby(["position", "method"])["frequency"].sum()
    assert freq.round(9).eq(1.0).all()
    # exact sampling: speculative-vs-target TV stays near the target-vs-target noise floor
    assert (tv["tv_speculative_vs_target"] < tv["tv_noise_floor"] + 0.1).all()


def test_total_variation():
    from collections import Counter

    assert total_variation(Counter({1: 5}), Counter({1: 2})) == 0
    assert total_variation(Counter({1: 1}), Counter({2: 1})) == 1


def test_pair_costs_and_prediction(pair):
    t, _ = pair
    small = tiny_model("llama", vocab_size=16, layers=1, hidden=16, heads=2, seed=2)
    costs = pair_costs(t, small, context=8, ks=[1, 3], min_run_time=0.01)
    assert list(costs["k"]) == [1, 3] and (costs["c"] > 0).all() and (costs["verify_cost"] > 0).all()
    pred = predict_speedup(0.5, costs)
    k1 = pred.iloc[0]
    assert k1["speedup_thm38"] == pytest.approx(1.5 / (k1["c"] + 1))
    assert k1["speedup_with_verify_cost"] == pytest.approx(1.5 / (k1["c"] + k1["verify_cost"]))


def test_render_trace():
    html = render_trace(["a", "<b>"], ["draft", "bonus"])
    assert "&lt;b&gt;" in html and "#b7e4c7" in html
    with pytest.raises(ValueError, match="pieces"):
        render_trace(["a"], ["draft", "bonus"])
    with pytest.raises(ValueError, match="unknown"):
        render_trace(["a"], ["oracle"])
