"""Headline runs and verdict rows (specnb.bench.headline)."""

import math

import pytest
import torch

from conftest import hf_greedy, prompts
from specnb.bench.headline import LOOP_DISTINCT4, VERDICT_COLUMNS, claim_row, headline_runs, pair_methods, verdict_frame
from specnb.generate import hf_generate
from specnb.stats import paired_speedup


@pytest.fixture(scope="module")
def pair(llama50_pair):
    return llama50_pair


def test_headline_runs_are_the_targets_greedy_output_and_pair_by_prompt(pair):
    target, draft = pair
    ps = prompts(3, vocab=50)
    runs = headline_runs(target, {"d k=2": (draft, 2), "d k=4": (draft, 4)}, ps, runs=2, max_new_tokens=9, progress=False,
                         **{"HF greedy": lambda p: hf_generate(target, p, 9)})
    assert len(runs) == 2 * 3 * 4 and set(runs.method) == {"autoregressive", "d k=2", "d k=4", "HF greedy"}
    assert runs.identical.all() and not runs.sampled.any()
    ref = hf_greedy(target, ps[1], 9)[0, ps[1].shape[1]:].tolist()
    assert runs[(runs.prompt == 1)].tokens.map(lambda t: list(map(int, t.split()))).map(lambda t: t == ref).all()
    # the k of each speculative decoder is the pair's (a k=4 iteration proposes up to 4 tokens)
    assert set(runs.loc[runs.method == "d k=4", "k"]) == {4} and set(runs.loc[runs.method == "d k=2", "k"]) == {2}
    s = paired_speedup(runs, "d k=2", "autoregressive")
    assert s["n_prompts"] == 3 and s["n_runs"] == 2 and s["ci_low"] <= s["speedup"] <= s["ci_high"]


def test_implementation_table_pairs_two_implementations_in_one_run(pair):
    from specnb.bench.headline import implementation_table
    from specnb.generate import assisted_generate

    target, draft = pair
    ps = prompts(3, vocab=50)
    runs = headline_runs(target, {"d k=2": (draft, 2)}, ps, runs=2, max_new_tokens=9, progress=False,
                         **{"HF assisted d": lambda p: assisted_generate(target, draft, p, 9, k=2)})
    table = implementation_table(runs, {"d": (2, "d k=2", "HF assisted d")}).set_index("implementation")
    assert list(table.index) == ["SpS", "AsG", "SpS / AsG"] and (table["k"] == 2).all()
    ratio = paired_speedup(runs, "d k=2", "HF assisted d")
    assert table.loc["SpS / AsG", "speedup"] == pytest.approx(ratio["speedup"]) and table.loc["SpS / AsG", "ci_low"] == pytest.approx(ratio["ci_low"])
    assert table.loc["SpS", "speedup"] == pytest.approx(paired_speedup(runs, "d k=2", "autoregressive")["speedup"])
    assert 0 <= table.loc["SpS", "acceptance_rate"] <= 1 and math.isnan(table.loc["SpS / AsG", "acceptance_rate"])
    with pytest.raises(ValueError, match="not among the measured methods"):
        implementation_table(runs, {"d": (2, "d k=3", "HF assisted d")})


def test_sampled_headline_draws_per_method_and_is_flagged(pair):
    target, draft = pair
    ps = prompts(2, vocab=50)
    a = headline_runs(target, {"d": (draft, 3)}, ps, runs=1, max_new_tokens=8, do_sample=True, seed=5, progress=False)
    b = headline_runs(target, {"d": (draft, 3)}, ps, runs=1, max_new_tokens=8, do_sample=True, seed=5, progress=False)
    assert a.sampled.all() and (a.temperature == 1.0).all()
    key = ["prompt", "method"]
    assert a.sort_values(key).tokens.tolist() == b.sort_values(key).tokens.tolist()  # seeded, rotation-proof
    c = headline_runs(target, {"d": (draft, 3)}, ps, runs=1, max_new_tokens=8, do_sample=True, seed=6, progress=False)
    assert a.sort_values(key).tokens.tolist() != c.sort_values(key).tokens.tolist()


def test_pair_methods_reject_bad_pairs_and_name_clashes(pair):
    target, draft = pair
    with pytest.raises(ValueError, match="at least one"):
        pair_methods(target, {}, max_new_tokens=4)
    with pytest.raises(ValueError, match="int k >= 1"):
        pair_methods(target, {"d": (draft, 0)}, max_new_tokens=4)
    with pytest.raises(ValueError, match="int k >= 1"):
        pair_methods(target, {"d": draft}, max_new_tokens=4)
    with pytest.raises(ValueError, match="already pair labels"):
        headline_runs(target, {"d": (draft, 2)}, prompts(1, vocab=50), runs=1, max_new_tokens=4, progress=False,
                      d=lambda p: hf_generate(target, p, 4))


def test_claim_row_verdicts_follow_the_interval_and_flag_loops():
    stat = {"speedup": 1.4, "ci_low": 1.2, "ci_high": 1.6, "n_prompts": 20, "n_runs": 3, "run_min": 1.3, "run_max": 1.5}
    row = claim_row("pays", "1.5x", stat, 1.0, distinct4=0.12)
    assert row["verdict"] == "held" and row["n"] == "20 prompts x 3 runs" and row["95% CI"] == "[1.20x, 1.60x]"
    assert row["runs range"] == "1.30x–1.50x" and "loops" in row["caveat"] and row["target distinct-4"] == "0.12"
    assert claim_row("slower", "0.48x", stat, 1.0, higher_is_claim=False)["verdict"] == "not held"
    assert claim_row("≥ 1.5x", "", stat, 1.5)["verdict"] == "inconclusive"
    assert claim_row("x", "", stat, 1.0, distinct4=LOOP_DISTINCT4 + 0.1)["caveat"] == ""
    nan = claim_row("x", "", {"speedup": 1.0, "ci_low": math.nan, "ci_high": math.nan}, 1.0)
    assert nan["verdict"] == "inconclusive" and nan["n"] == "—" and nan["runs range"] == "—"
    with pytest.raises(ValueError, match="needs 'ci_low'"):
        claim_row("x", "", {"speedup": 1.0}, 1.0)
    frame = verdict_frame([row])
    assert list(frame.columns) == VERDICT_COLUMNS and verdict_frame([row], numbers=True)["estimate"].iloc[0] == 1.4
    with pytest.raises(ValueError, match="claim_row"):
        verdict_frame([{"claim": "x"}])


def test_band_and_prediction_verdicts():
    from specnb.bench.headline import band_verdict, prediction_stat
    assert band_verdict(0.95, 1.05, (0.9, 1.1)) == "held"
    assert band_verdict(1.15, 1.3, (0.9, 1.1)) == "not held" and band_verdict(0.5, 0.8, (0.9, 1.1)) == "not held"
    assert band_verdict(1.0, 1.2, (0.9, 1.1)) == "inconclusive" and band_verdict(math.nan, 1.0, (0.9, 1.1)) == "inconclusive"
    with pytest.raises(ValueError, match="low < high"):
        band_verdict(1, 1, (1.1, 0.9))
    measured = {"speedup": 2.0, "ci_low": 1.6, "ci_high": 2.5, "n_prompts": 20, "n_runs": 3, "run_min": 1.8, "run_max": 2.2}
    p = prediction_stat(2.0, measured)
    assert p["ratio"] == 1.0 and p["ci_low"] == pytest.approx(0.8) and p["ci_high"] == pytest.approx(1.25)
    assert p["run_min"] == pytest.approx(2 / 2.2) and p["n_prompts"] == 20
    row = claim_row("prediction within 10%", "Thm 3.8", p, (0.9, 1.1), value="ratio", unit="")
    assert row["verdict"] == "inconclusive" and row["ours"] == "1.00"
    tight = prediction_stat(3.0, {"speedup": 2.0, "ci_low": 1.9, "ci_high": 2.1})
    assert claim_row("x", "", tight, (0.9, 1.1), value="ratio", unit="")["verdict"] == "not held"
    with pytest.raises(ValueError, match="positive"):
        prediction_stat(0.0, measured)


def test_round_ratio_pairs_rounds():
    import pandas as pd
    from specnb.bench.headline import round_ratio
    rows = [{"model": m, "round": r, "median_s": t * (1 + 0.1 * r)} for r in range(6) for m, t in (("a", 2.0), ("b", 1.0))]
    out = round_ratio(pd.DataFrame(rows), "a", "b")
    assert out["ratio"] == pytest.approx(2.0) and out["ci_low"] == pytest.approx(2.0) and out["n_rounds"] == 6
    with pytest.raises(ValueError, match="was not timed"):
        round_ratio(pd.DataFrame(rows), "a", "c")


def test_fit_line_recovers_a_slope_and_rejects_flat_x():
    import numpy as np
    from specnb.bench.headline import fit_line
    x = np.repeat([1, 2, 4, 8], 5)
    y = 0.2 * x + 0.5 + np.random.default_rng(0).normal(0, 0.01, len(x))
    f = fit_line(x, y)
    assert f["ci_low"] < 0.2 < f["ci_high"] and f["r2"] > 0.99 and f["n"] == 20 and abs(f["intercept"] - 0.5) < 0.02
    assert claim_row("grows", "", f, 0.0, value="slope", unit=" ms")["verdict"] == "held"
    with pytest.raises(ValueError, match="more than one x"):
        fit_line([1, 1, 1], [1, 2, 3])


def test_share_median_and_k_star_rows():
    import pandas as pd
    from specnb.bench.headline import k_star_row, median_stat, share_stat
    s = share_stat(17, 17)
    assert s["share"] == 1.0 and s["ci_high"] == 1.0 and 0.8 < s["ci_low"] < 0.85  # exact: 0.025 ** (1 / 17)
    assert claim_row("≥ 80% within 10%", "", s, 0.8, value="share", unit="")["verdict"] == "held"
    assert claim_row("≥ 80%", "", share_stat(9, 17), 0.8, value="share", unit="")["verdict"] == "not held"
    with pytest.raises(ValueError, match="hits <= n"):
        share_stat(5, 3)
    m = median_stat([0.01, 0.02, 0.03, 0.04, float("nan")])
    assert m["median"] == pytest.approx(0.025) and m["n"] == 4 and m["ci_low"] <= m["median"] <= m["ci_high"]
    sweep = pd.DataFrame({"k": [1, 2, 3, 4], "speedup": [1.2, 1.5, 1.6, 1.3], "ci_low": [1.1, 1.4, 1.5, 1.2],
                          "ci_high": [1.3, 1.55, 1.7, 1.4], "n_prompts": 20, "n_runs": 3})
    row = k_star_row("K* in 3-5", "3-5", sweep, (3, 5))
    assert row["ours"].startswith("K* set {2, 3}") and row["verdict"] == "inconclusive" and row["n"] == "20 prompts x 3 runs"
    assert k_star_row("x", "", sweep.assign(ci_high=[1.3, 1.45, 1.7, 1.4]), (3, 5))["verdict"] == "held"
    assert k_star_row("x", "", sweep, (5, 7))["verdict"] == "not held"
