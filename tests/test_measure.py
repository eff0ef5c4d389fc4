"""Notebook measurements on tiny models: real behaviour, no timing assertions."""

import pytest
import numpy as np
import pandas as pd
import torch

from specnb.generate import speculative_generate
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


@pytest.mark.slow
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


def test_heldout_prompts_come_from_test_files():
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    from specnb.measure import heldout_prompts

    raw = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw)
    prompts = heldout_prompts(tok, n=3, length=16, seed=1)
    assert len(prompts) == 3 and all(p.shape == (1, 16) for p in prompts)
    assert [p.tolist() for p in prompts] == [p.tolist() for p in heldout_prompts(tok, n=3, length=16, seed=1)]
    with pytest.raises(ValueError):
        heldout_prompts(tok, n=0)


def test_plots_and_describe(pair, tmp_path):
    import matplotlib.pyplot as plt
    import pandas as pd

    from specnb.models import describe
    from specnb.plotting import plot_methods, plot_token_frequencies

    t, d = pair
    table = describe({"target": t, "draft": d})
    assert list(table["model"]) == ["target", "draft"] and (table["layers"] == 2).all()
    counts, _ = sampling_histograms(t, d, torch.tensor([[1, 2]]), runs=20, new_tokens=2, k=2, progress=False)
    fig = plot_token_frequencies(counts, positions=[1, 2], decode=str)
    assert len(fig.axes) == 2
    fig2 = plot_methods(pd.DataFrame({"method": ["a", "b"], "tokens_per_second_median": [1, 2], "ttft_seconds_median": [0.1, 0.2]}))
    assert len(fig2.axes) == 2
    plt.close("all")


def test_latency_plots():
    import matplotlib.pyplot as plt
    import pandas as pd

    from specnb.plotting import plot_decode_sweep, plot_op_latency

    ops = pd.DataFrame({"op": ["a"] * 3 + ["b"] * 3, "size": [16, 64, 256] * 2, "work": [16, 64, 256] * 2,
                        "median_s": [1e-6, 2e-6, 5e-6, 3e-6, 3e-6, 3e-6]})
    fits = pd.DataFrame({"op": ["a", "b"], "t0_s": [1e-6, 3e-6], "throughput": [6e7, 0.0], "r2": [0.9, 0.1]})
    axes = [a for a in plot_op_latency(ops, fits).axes if a.get_visible()]
    assert len(axes) == 2
    assert len(axes[0].lines) == 3 and len(axes[1].lines) == 1  # r² < 0.5: the points alone, no fit, no t0
    assert "no fit drawn" in axes[1].get_title()
    sweep = pd.DataFrame({"width": [16, 64], "depth": [12, 12], "n_ops": [600, 600], "decode_s": [0.004, 0.005]})
    assert len(plot_decode_sweep(sweep, sweep.assign(depth=[1, 2], width=416), 6e-6).axes) == 2
    plt.close("all")


def test_draft_quality_copy_random_and_expected_alpha(pair):
    import numpy as np

    from specnb.measure import draft_quality

    t, d = pair
    tokens = np.random.default_rng(0).integers(0, 16, 600)
    q = draft_quality(t, {"copy": tiny_model("llama", vocab_size=16, layers=2, init_std=0.5, seed=4), "perturbed": d,
                          "random": tiny_model("llama", vocab_size=16, layers=2, init_std=0.5, seed=9)},
                      tokens, seq_len=32, max_tokens=256, progress=False).set_index("model")
    assert list(q.index) == ["target", "copy", "perturbed", "random"]
    assert q.loc["copy", "top1_agreement"] == 1.0 and q.loc["copy", "expected_alpha"] == pytest.approx(1.0)
    assert q.loc["copy", "loss"] == pytest.approx(q.loc["target", "loss"])
    assert q.loc["perturbed", "expected_alpha"] > q.loc["random", "expected_alpha"]
    assert (q["expected_alpha"] <= 1 + 1e-6).all() and np.allclose(q["perplexity"], np.exp(q["loss"]))
    # expected_alpha is E[sum min(p, q)], checked against theory.alpha_from_distributions at one position
    from specnb.measure import heldout_windows
    from specnb.generate.theory import alpha_from_distributions

    x = heldout_windows(tokens, seq_len=32, max_tokens=32)[:, :-1]
    with torch.no_grad():
        p1, q1 = (torch.softmax(m(input_ids=x).logits[0, -1], -1) for m in (t, d))
    assert 0 < alpha_from_distributions(p1, q1) <= 1
    with pytest.raises(ValueError, match="at least one draft"):
        draft_quality(t, {}, tokens)
    with pytest.raises(ValueError, match="shorter seq_len"):
        heldout_windows(tokens[:10], seq_len=32, max_tokens=64)


def test_correlate_recovers_known_relations():
    import numpy as np
    import pandas as pd

    from specnb.measure import correlate

    rng = np.random.default_rng(3)
    x = rng.normal(size=20)
    frame = pd.DataFrame({"linked": x, "noise": rng.normal(size=20), "y": 3 * x + 0.1 * rng.normal(size=20)})
    out = correlate(frame, ["linked", "noise"], "y", n_resamples=300).set_index(["predictor", "method"])
    assert out.loc[("linked", "pearson"), "r"] > 0.99 and out.loc[("linked", "pearson"), "ci_low"] > 0.95
    noise = out.loc[("noise", "spearman")]
    assert abs(noise["r"]) < 0.6 and noise["ci_high"] - noise["ci_low"] > 0.3  # unrelated: weak r, wide interval
    assert (out["ci_low"] <= out["r"] + 1e-9).all() and (out["r"] <= out["ci_high"] + 1e-9).all()
    with pytest.raises(ValueError, match="not in the frame"):
        correlate(frame, ["missing"], "y")
    with pytest.raises(ValueError, match=">= 4 complete rows"):
        correlate(frame.head(3), ["linked"], "y")


def test_acceptance_pools_alpha_and_tau(pair):
    from specnb.measure import acceptance

    t, d = pair
    ps = [torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5]])]
    out = acceptance(t, {"copy": t, "perturbed": d}, ps, k=3, new_tokens=20, progress=False).set_index("model")
    full = [speculative_generate(t, t, ids, 20, k=3) for ids in ps]
    blocks = [p for r in full for p in r.proposed]  # k = 3, the last block capped by max_new_tokens
    assert out.loc["copy", "alpha"] == 1.0 and out.loc["copy", "tau"] == pytest.approx(sum(p + 1 for p in blocks) / len(blocks))
    # pooled by hand from the same greedy runs
    runs = [speculative_generate(t, d, ids, 20, k=3) for ids in ps]
    acc = sum(sum(r.accepted) for r in runs)
    judged = sum(a + (a < p) for r in runs for a, p in zip(r.accepted, r.proposed))
    assert out.loc["perturbed", "alpha"] == pytest.approx(acc / judged)
    assert out.loc["perturbed", "tau"] == pytest.approx((acc + sum(len(r.accepted) for r in runs)) / sum(len(r.accepted) for r in runs))
    # the prompt-level CI brackets the pooled alpha; distinct-4 is the outputs' (greedy: the target's text)
    assert out.loc["perturbed", "alpha_low"] <= out.loc["perturbed", "alpha"] <= out.loc["perturbed", "alpha_high"]
    assert out.loc["copy", "alpha_low"] == out.loc["copy", "alpha_high"] == 1.0 and (out["prompts"] == 2).all()
    from specnb.stats import distinct_ngram_ratio
    assert out.loc["perturbed", "distinct4"] == pytest.approx(np.mean([distinct_ngram_ratio(r.new_tokens.tolist()) for r in runs]))
    # the greedy replay (default) gives the loop's own counts, draft by draft
    looped = acceptance(t, {"copy": t, "perturbed": d}, ps, k=3, new_tokens=20, replay=False, progress=False).set_index("model")
    pd.testing.assert_frame_equal(out, looped)
    from specnb.generate import PromptLookupDraft
    with pytest.raises(ValueError, match="replay=False"):
        acceptance(t, {"lookup": PromptLookupDraft()}, ps, k=3, new_tokens=5, progress=False)
    sampled = acceptance(t, {"perturbed": d}, ps, k=3, new_tokens=20, do_sample=True, seed=1, progress=False)
    again = acceptance(t, {"perturbed": d}, ps, k=3, new_tokens=20, do_sample=True, seed=1, progress=False)
    assert sampled.equals(again) and 0 <= sampled["alpha"].iloc[0] <= 1
    with pytest.raises(ValueError, match="at least one draft"):
        acceptance(t, {}, ps, k=3, new_tokens=5)


def test_corpus_tokens_are_split_files_in_seeded_order():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from specnb.measure import corpus_tokens

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "import": 1, "def": 2, "<eot>": 3}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eot>")
    a = corpus_tokens(tok, split="test", max_tokens=5000, seed=2)
    assert len(a) == 5000 and set(a.tolist()) <= {0, 1, 2, 3} and (a == 3).any()  # files end with eot
    assert (a == corpus_tokens(tok, split="test", max_tokens=5000, seed=2)).all()
    assert not (a == corpus_tokens(tok, split="train", max_tokens=5000, seed=2)).all()
    with pytest.raises(ValueError, match="splits are"):
        corpus_tokens(tok, split="dev")


def test_new_plots_render(tmp_path):
    import numpy as np
    import pandas as pd

    from specnb.planner import optimal_k_grid
    from specnb.plotting import (plot_depth_latency, plot_k_heatmap, plot_k_sweep, plot_predictors,
                                 plot_speedup_vs_size, save_fig)

    size = pd.DataFrame({"draft": ["a", "b"], "params": [1e5, 1e6], "k": [3, 4], "measured_speedup": [1.1, 1.4],
                         "measured_q25": [1.0, 1.3], "measured_q75": [1.2, 1.5], "predicted_speedup": [1.2, 1.5],
                         "speedup_thm38": [1.5, 1.9]})
    depth = pd.DataFrame({"model": ["d1", "d2", "d4"], "layers": [1, 2, 4], "decode_ms": [1.5, 2.5, 4.4]})
    pred = pd.DataFrame({"accuracy": [0.1, 0.2, 0.3, 0.4], "alpha": [0.2, 0.1, 0.5, 0.6], "kind": list("abab")})
    sweep = pd.DataFrame({"draft": ["a"] * 3, "k": [1, 2, 3], "ms_per_token": [5.0, 4.0, 4.5]})
    grid = optimal_k_grid(np.linspace(0, 0.9, 4), [0.1, 0.5])
    ci = size.drop(columns=["measured_q25", "measured_q75"]).assign(ci_low=[0.9, 1.2], ci_high=[1.3, 1.6], ladder=["x", "y"])
    lines = plot_speedup_vs_size(ci, hue="ladder", seeds={"seed 003 Pythia": (1e5, 1.98)})
    assert len(lines.axes[0].get_lines()) > 0 and any("seed 003" in t.get_text() for t in lines.axes[0].texts)
    assert save_fig(lines, "size_ci", tmp_path)[0].stat().st_size > 0
    figs = {"size": plot_speedup_vs_size(size), "depth": plot_depth_latency(depth, 1.0, 0.5, 0.99),
            "pred": plot_predictors(pred, ["accuracy"], "alpha", hue="kind"), "sweep": plot_k_sweep(sweep, best=6.0),
            "heat": plot_k_heatmap(grid, pd.DataFrame({"alpha": [0.5], "c": [0.2], "label": ["x"]}))}
    for name, fig in figs.items():
        assert save_fig(fig, name, tmp_path)[0].stat().st_size > 0
    assert len(figs["pred"].axes) == 1


def test_planner_check_plot_draws_the_measurements_ci_when_it_has_one(tmp_path):
    import pandas as pd

    from specnb.plotting import plot_planner_check, save_fig

    check = pd.DataFrame({"draft": ["a", "a"], "k": [1, 2], "measured_speedup": [1.0, 1.2], "predicted_speedup": [1.1, 1.25],
                          "predicted_lo": [0.9, 1.0], "predicted_hi": [1.3, 1.4], "predicted_speedup_iid": [1.2, 1.3]})
    bare = plot_planner_check(check)
    with_ci = plot_planner_check(check.assign(measured_ci_low=[0.8, 1.1], measured_ci_high=[1.5, 1.3]))
    segments = lambda fig: sum(len(c.get_segments()) for c in fig.axes[0].collections if hasattr(c, "get_segments"))
    assert segments(with_ci) == segments(bare) + 2  # one horizontal bar per measured pair
    assert with_ci.axes[0].get_xlim()[1] >= 1.5 * 1.05 - 1e-9  # the axes hold the widest CI
    assert save_fig(with_ci, "planner_check", tmp_path)[0].stat().st_size > 0


def test_sps_vs_asg_rows_and_profile(pair):
    from specnb.measure import sps_vs_asg

    t, d = pair
    speed, prof = sps_vs_asg(t, {"perturbed": (d, 3)}, [torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5]])],
                             new_tokens=12, repeats=5, progress=False)
    assert list(speed["implementation"]) == ["SpS", "AsG"] and (speed["k"] == 3).all()
    assert speed["acceptance_rate"].between(0, 1).all() and (speed["speedup"] > 0).all()
    assert set(prof.columns) >= {"target_forward_s", "draft_forward_s", "outside_s", "outside_share"}
    assert (prof["outside_s"] + prof["target_forward_s"] + prof["draft_forward_s"] - prof["total_s"]).abs().max() < 1e-6
    with pytest.raises(ValueError, match="at least one pair"):
        sps_vs_asg(t, {}, [torch.tensor([[1]])], new_tokens=4)
    from specnb.measure import forward_profile
    alone = forward_profile(t, {"perturbed": (d, 3)}, torch.tensor([[1, 2, 3]]), new_tokens=12)
    assert list(alone["implementation"]) == ["SpS", "AsG"] and (alone["draft_forward_s"] > 0).all()
    with pytest.raises(ValueError, match="at least one pair"):
        forward_profile(t, {}, torch.tensor([[1]]), new_tokens=4)


def test_format_correlation_reads_one_row_and_rejects_missing_ones():
    import pandas as pd
    from specnb.measure import format_correlation
    corr = pd.DataFrame([{"predictor": "accuracy", "outcome": "alpha_greedy", "method": "spearman", "r": 0.936, "ci_low": 0.728, "ci_high": 0.998},
                         {"predictor": "accuracy", "outcome": "alpha_greedy", "method": "pearson", "r": -0.1, "ci_low": -0.5, "ci_high": 0.3}])
    assert format_correlation(corr, "accuracy") == "+0.94 [+0.73, +1.00]"
    assert format_correlation(corr, "accuracy", method="pearson") == "-0.10 [-0.50, +0.30]"
    with pytest.raises(ValueError, match="no single spearman row"):
        format_correlation(corr, "perplexity")


def test_pair_costs_takes_ratios_within_rounds(monkeypatch):
    """A slow spell that lands on one round's target step must not move c or the verify cost: each
    ratio is the median of per-round ratios of steps timed interleaved."""
    import specnb.timing as timing

    target, draft = tiny_model("llama", layers=1, seed=1), tiny_model("llama", layers=1, seed=2)
    speed = [1.0, 1.0, 3.0, 1.0, 1.0]  # round 2 runs 3x slower for everything

    def step(model, *, context, tokens, min_run_time, seed):
        base = 0.001 if model is draft else 0.010 * (1 + 0.1 * (tokens - 1))
        return {"median_s": base * speed[seed]}

    monkeypatch.setattr(timing, "step_latency", step)
    costs = pair_costs(target, draft, context=8, ks=[1, 4], rounds=5).set_index("k")
    assert costs.loc[1, "c"] == pytest.approx(0.1) and costs.loc[4, "c"] == pytest.approx(0.1)
    assert costs.loc[1, "verify_cost"] == pytest.approx(1.1) and costs.loc[4, "verify_cost"] == pytest.approx(1.4)
    assert costs.loc[4, "target_step_s"] == pytest.approx(0.010)


def test_predictor_plot_logs_a_predictor_spanning_decades():
    import matplotlib.pyplot as plt
    import pandas as pd

    from specnb.plotting import plot_predictors

    frame = pd.DataFrame({"perplexity": [50.0, 100.0, 3000.0], "accuracy": [0.1, 0.2, 0.3], "alpha": [0.5, 0.4, 0.1]})
    corr = pd.DataFrame({"predictor": ["accuracy"] * 2, "outcome": ["alpha"] * 2, "method": ["pearson", "spearman"], "r": [0.9, 0.8]})
    fig = plot_predictors(frame, ["perplexity", "accuracy"], "alpha", corr=corr)
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "linear"]
    assert "Pearson r +0.90" in fig.axes[1].get_title() and "Spearman ρ +0.80" in fig.axes[1].get_title()
    plt.close("all")
