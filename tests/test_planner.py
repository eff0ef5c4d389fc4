"""The planner: calibration rows, the prediction formula, recommendation, validation bookkeeping and
the K* grid. Timing values are never asserted (CI is noisy): only structure, formulas and the
quantities that do not depend on the clock (alpha, tokens per iteration, identity)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from specnb import planner
from specnb.generate import autoregressive_generate, speculative_generate
from specnb.latency import LatencyModel
from specnb.models import tiny_model
from specnb.generate.schedules import AdaptiveK, HeuristicK
from specnb.generate import HybridDraft, PromptLookupDraft
from conftest import prompts
from specnb.generate.theory import expected_tokens_per_iteration, optimal_k, walltime_speedup

KS = (1, 2, 3)
N_NEW = 8
PROMPTS = [torch.tensor([[3, 4, 5]]), torch.tensor([[7, 8, 9, 10]])]


@pytest.fixture(scope="module")
def models():
    target = tiny_model("llama", seed=1)
    return target, {"copy": tiny_model("llama", seed=1), "random": tiny_model("llama", seed=2)}


@pytest.fixture(scope="module")
def plan(models):
    target, drafts = models
    return planner.calibrate(target, drafts, PROMPTS, ks=KS, new_tokens=N_NEW, progress=False)


def hand_prediction(row) -> float:
    """The i.i.d. prediction: Leviathan's Eq. 1 with the pooled alpha, over the measured costs."""
    a = row.alpha_iid
    tau = row.k + 1 if a == 1 else (1 - a ** (row.k + 1)) / (1 - a)
    return tau * (row.t_target_s + row.t_loop_ar_s) / (row.k * row.t_draft_s + row.t_verify_s + row.t_loop_s)


def hand_replayed(target, plan, draft, k, prompts, n_new) -> float:
    """The replayed prediction by hand: walk the loop on the target's greedy output with the
    draft's own greedy proposals, price every iteration at the plan's costs, sum over prompts."""
    rows = plan[plan["draft"] == draft].set_index("k")
    c, loop, pre, loop_ar = (rows.loc[k, col] for col in ("c", "loop_cost", "prefill_cost", "loop_cost_ar"))
    spec = ar = 0.0
    for ids in prompts:
        seq = autoregressive_generate(target, ids, n_new).sequences[0].tolist()
        new, t = 1, pre
        while new < n_new:
            kk = min(k, n_new - new - 1)
            if kk == 0:
                t, new = t + 1 + loop, new + 1
                continue
            guess = autoregressive_generate(draft_models[draft], torch.tensor([seq[: ids.shape[1] + new]]), kk)
            guess = guess.sequences[0, -kk:].tolist()
            truth = seq[ids.shape[1] + new: ids.shape[1] + new + kk]
            a = next((i for i in range(kk) if guess[i] != truth[i]), kk)
            t += kk * c + rows.loc[kk, "verify_cost"] + loop
            new += a + 1
        spec += t
        ar += (n_new - 1) * (1 + loop_ar)
    return ar / spec


draft_models = {}


def test_calibrate_one_row_per_pair(plan):
    assert list(plan.columns) == planner.PLAN_COLUMNS
    assert len(plan) == 2 * len(KS)
    assert sorted(zip(plan["draft"], plan["k"])) == sorted((d, k) for d in ("copy", "random") for k in KS)
    assert plan["alpha"].between(0, 1).all() and (plan["judged"] > 0).all()
    assert (plan.loc[plan["draft"] == "copy", "alpha"] == 1.0).all()
    assert (plan.loc[plan["draft"] == "random", "alpha"] < 0.3).all()
    for col in ("c", "verify_cost", "t_target_s", "t_draft_s", "t_verify_s", "predicted_speedup", "seconds_per_iteration"):
        assert (plan[col] > 0).all() and np.isfinite(plan[col]).all(), col
    assert (plan["loop_cost"] >= 0).all() and (plan["t_loop_s"] >= 0).all()
    assert (plan["costs"] == "in-run").all() and plan.attrs["new_tokens"] == N_NEW
    assert (plan["pays"] == (plan["predicted_speedup"] > 1)).all()


def test_replayed_prediction_matches_hand_computation(models, plan):
    target, drafts = models
    draft_models.update(drafts)
    for draft in ("copy", "random"):
        for k in KS:
            row = plan.set_index(["draft", "k"]).loc[(draft, k)]
            assert row["predicted_speedup"] == pytest.approx(hand_replayed(target, plan, draft, k, PROMPTS, N_NEW), rel=1e-9)
            assert row["predicted_lo"] <= row["predicted_speedup"] * (1 + 1e-9) and row["predicted_hi"] >= row["predicted_lo"]
    # a draft that copies the target accepts everything: k + 1 tokens per full iteration, fewer only where k is capped
    copy = plan[plan["draft"] == "copy"].set_index("k")
    assert (copy["alpha"] == 1.0).all() and copy.loc[1, "tokens_per_iteration"] == 2.0
    assert (copy["tokens_per_iteration"] <= copy.index + 1).all()


def test_iid_prediction_matches_hand_computation(plan):
    for row in plan.itertuples(index=False):
        assert row.predicted_speedup_iid == pytest.approx(hand_prediction(row), rel=1e-9)
        # the same from the ratios, and its pieces
        tau = expected_tokens_per_iteration(row.alpha_iid, row.k)
        assert row.tokens_per_iteration_iid == pytest.approx(tau)
        assert row.predicted_speedup_iid == pytest.approx(
            tau * (1 + row.loop_cost_ar) / (row.k * row.c + row.verify_cost + row.loop_cost), rel=1e-9)
        assert row.c == pytest.approx(row.t_draft_s / row.t_target_s)
        assert row.verify_cost == pytest.approx(row.t_verify_s / row.t_target_s)
        assert row.predicted_tokens_per_second == pytest.approx(row.tokens_per_iteration / row.seconds_per_iteration)
        assert row.predicted_speedup == pytest.approx(row.predicted_tokens_per_second / row.baseline_tokens_per_second)
        assert row.speedup_thm38 == pytest.approx(walltime_speedup(row.alpha_iid, row.k, row.c))
        assert row.predicted_speedup_iid == pytest.approx(planner.predicted_speedup(
            row.alpha_iid, row.k, t_target=row.t_target_s, t_draft=row.t_draft_s, t_verify=row.t_verify_s,
            t_loop=row.t_loop_s, t_loop_ar=row.t_loop_ar_s))


def test_prediction_reduces_to_thm38():
    alphas, ks, cs = np.linspace(0, 1, 11), np.arange(1, 8), [0.0, 0.05, 0.3, 1.0]
    for a in alphas:
        for k in ks:
            for c in cs:
                ours = planner.predicted_speedup(a, k, t_target=2.0, t_draft=2.0 * c)  # verify = 1 step, no loop cost
                assert ours == pytest.approx(walltime_speedup(a, k, c))
                assert planner.predicted_speedup(a, k, t_target=2.0, t_draft=2.0 * c, t_verify=2.4) == pytest.approx(
                    walltime_speedup(a, k, c, 1.2))
    # vectorised over a grid
    grid = planner.predicted_speedup(alphas[:, None], ks[None, :], t_target=1.0, t_draft=0.1)
    assert grid.shape == (11, 7) and np.allclose(grid, walltime_speedup(alphas[:, None], ks[None, :], 0.1))
    # loop costs only ever lower the prediction, the baseline's overhead raises it
    assert planner.predicted_speedup(0.8, 4, t_target=1, t_draft=0.1, t_loop=0.2) < walltime_speedup(0.8, 4, 0.1)
    assert planner.predicted_speedup(0.8, 4, t_target=1, t_draft=0.1, t_loop_ar=0.2) > walltime_speedup(0.8, 4, 0.1)
    with pytest.raises(ValueError, match="t_target"):
        planner.predicted_speedup(0.5, 2, t_target=0.0, t_draft=0.1)


def test_recommend_is_the_argmax(plan):
    best = planner.recommend(plan)
    assert best["predicted_speedup"] == plan["predicted_speedup"].max()
    only = planner.recommend(plan, draft="random")
    assert only["draft"] == "random"
    assert only["predicted_speedup"] == plan.loc[plan["draft"] == "random", "predicted_speedup"].max()
    # ties go to the first row (calibration order of drafts, then the smaller k)
    tied = plan.assign(predicted_speedup=1.0)
    assert (planner.recommend(tied)["draft"], planner.recommend(tied)["k"]) == ("copy", 1)
    with pytest.raises(ValueError, match="not in the plan"):
        planner.recommend(plan, draft="nope")
    with pytest.raises(ValueError, match="DataFrame returned by planner.calibrate"):
        planner.recommend(plan.drop(columns="predicted_speedup"))
    with pytest.raises(ValueError, match="empty"):
        planner.recommend(plan.iloc[:0])


def test_run_recommended_is_target_greedy(models, plan):
    target, drafts = models
    out = planner.run_recommended(target, drafts, plan, PROMPTS[1], 12)
    best = planner.recommend(plan)
    assert out.k == int(best["k"])
    assert torch.equal(out.sequences, autoregressive_generate(target, PROMPTS[1], 12).sequences)


def test_step_costs_and_latency_model(models):
    target, drafts = models
    step = planner.calibrate(target, drafts, PROMPTS[:1], ks=KS, new_tokens=N_NEW, costs="step", min_run_time=0.01,
                             progress=False)
    assert (step["costs"] == "step").all()
    for _, g in step.groupby("draft"):
        assert g["c"].nunique() == 1  # one draft step latency for every k
    assert step.groupby("k")["verify_cost"].nunique().eq(1).all()  # one verify latency per k for every draft
    for row in step.itertuples(index=False):
        assert row.predicted_speedup_iid == pytest.approx(hand_prediction(row), rel=1e-9)
    lm = LatencyModel(t0_s=1e-5, peak_flops=1e9, bandwidth=1e9)
    pred = planner.calibrate(target, drafts, PROMPTS[:1], ks=KS, new_tokens=N_NEW, latency_model=lm, progress=False)
    ctx = pred.attrs["context"]
    base = lm.predict(target, ctx, 1)
    assert (pred["costs"] == "latency model").all()
    for row in pred.itertuples(index=False):
        assert row.c == pytest.approx(lm.predict(drafts[row.draft], ctx, 1) / base)
        assert row.verify_cost == pytest.approx(lm.predict(target, ctx, row.k + 1) / base)
    # alpha does not depend on where the costs come from
    assert step.groupby("draft")["alpha"].first().to_dict() == pred.groupby("draft")["alpha"].first().to_dict()


def test_validate_columns_and_bookkeeping(models, plan):
    target, drafts = models
    table, runs = planner.validate(target, drafts, plan, PROMPTS[:1], pairs=[("copy", 2), ("random", 1)], new_tokens=7,
                                   schedules={"heuristic": ("random", HeuristicK(start=2))}, progress=False,
                                   return_runs=True)
    assert list(table.columns) == planner.VALIDATION_COLUMNS
    assert list(table["method"]) == ["copy k=2", "random k=1", "random heuristic"]
    assert (table["measured_speedup"] > 0).all() and (table["repeats"] == 5).all()
    assert table["error"].iloc[:2].to_numpy() == pytest.approx(
        (table["predicted_speedup"] / table["measured_speedup"] - 1).iloc[:2].to_numpy())
    assert math.isnan(table["predicted_speedup"].iloc[2]) and not table["recommended"].iloc[2]
    copy_row = table.iloc[0]
    assert copy_row["measured_acceptance_rate"] == 1.0 and copy_row["measured_tokens_per_iteration"] == 3.0
    assert copy_row["predicted_speedup"] == plan.set_index(["draft", "k"]).loc[("copy", 2), "predicted_speedup"]
    assert set(runs["method"]) == {"target", "copy k=2", "random k=1", "random heuristic"}
    assert (runs.groupby("method").size() == 5).all()
    text = planner.report(table)
    assert "copy k=2" in text and "predicted" in text and "no prediction" in text and "pairs within 10%" in text
    # pairs="recommended" validates the argmax only
    best = planner.recommend(plan)
    rec = planner.validate(target, drafts, plan, PROMPTS[:1], pairs="recommended", new_tokens=6, progress=False)
    assert len(rec) == 1 and rec["recommended"].all() and rec["k"].iloc[0] == best["k"]


def test_validate_runs_from_headline_rows(models, plan):
    from specnb.bench.headline import headline_runs
    from specnb.stats import paired_speedup

    target, drafts = models
    runs = headline_runs(target, {"copy k=2": (drafts["copy"], 2), "random k=1": (drafts["random"], 1)}, PROMPTS, runs=2,
                         max_new_tokens=N_NEW, progress=False,
                         **{"random heuristic": lambda p: speculative_generate(target, drafts["random"], p, N_NEW, k=HeuristicK(start=2))})
    methods = {"copy k=2": ("copy", 2), "random k=1": ("random", 1), "random heuristic": ("random", "heuristic")}
    table = planner.validate_runs(plan, runs, methods)
    assert list(table.columns) == planner.VALIDATION_COLUMNS and list(table["method"]) == list(methods)
    for row in table.itertuples():  # the measurement is the paired, prompt-level one, with its CI
        s = paired_speedup(runs, row.method, "autoregressive")
        assert row.measured_speedup == pytest.approx(s["speedup"]) and row.measured_ci_low == pytest.approx(s["ci_low"])
        assert row.repeats == 2 and row.n_prompts == len(PROMPTS) and math.isnan(row.measured_q25)
    copy_row = table.iloc[0]
    assert copy_row["measured_acceptance_rate"] == 1.0 and copy_row["measured_tokens_per_iteration"] == 3.0
    assert copy_row["predicted_speedup"] == plan.set_index(["draft", "k"]).loc[("copy", 2), "predicted_speedup"]
    assert copy_row["error"] == pytest.approx(copy_row["predicted_speedup"] / copy_row["measured_speedup"] - 1)
    assert math.isnan(table["predicted_speedup"].iloc[2])
    with pytest.raises(ValueError, match="not in runs"):
        planner.validate_runs(plan, runs, {"copy k=3": ("copy", 3)})
    with pytest.raises(ValueError, match="plan lacks"):
        planner.validate_runs(plan, runs.replace({"method": {"copy k=2": "copy k=9"}}), {"copy k=9": ("copy", 9)})
    with pytest.raises(ValueError, match="lacks columns"):
        planner.validate_runs(plan, runs.drop(columns=["judged"]), methods)


def test_adaptive_schedule_from_plan(models, plan):
    target, drafts = models
    schedule = planner.adaptive_schedule(plan, "random")
    assert isinstance(schedule, AdaptiveK) and (schedule.k_min, schedule.k_max) == (1, 3)
    rows = plan[plan["draft"] == "random"].set_index("k")
    for k in KS:
        assert schedule.verify_costs[k] == pytest.approx(rows.loc[k, "verify_cost"])
        assert schedule.loop_costs[k] == pytest.approx(rows.loc[k, "loop_cost"])
        assert schedule.c[k] == pytest.approx(rows.loc[k, "c"])
    assert schedule.alpha == pytest.approx(rows["alpha_iid"].iloc[0], abs=1e-3)  # the prior is centred on alpha
    gappy = planner.adaptive_schedule(plan[plan["k"] != 2], "copy")  # k = 2 interpolated
    sub = plan[plan["draft"] == "copy"].set_index("k")
    assert gappy.verify_costs[2] == pytest.approx((sub.loc[1, "verify_cost"] + sub.loc[3, "verify_cost"]) / 2)
    out = speculative_generate(target, drafts["random"], PROMPTS[0], 12, k=schedule)
    assert torch.equal(out.sequences, autoregressive_generate(target, PROMPTS[0], 12).sequences)
    with pytest.raises(ValueError, match="not in the plan"):
        planner.adaptive_schedule(plan, "nope")


def test_optimal_k_grid():
    alphas, cs = np.linspace(0, 1, 11), [0.0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    grid = planner.optimal_k_grid(alphas, cs)
    assert list(grid.columns) == ["alpha", "c", "k_star", "speedup", "speedup_k1", "pays"]
    assert len(grid) == len(alphas) * len(cs) and grid["k_star"].between(1, 7).all()
    table = grid.pivot(index="alpha", columns="c", values="k_star")
    assert (table.diff(axis=0).fillna(0) >= 0).all().all()  # non-decreasing in alpha
    assert (table.diff(axis=1).fillna(0) <= 0).all().all()  # non-increasing in c
    for row in grid.itertuples(index=False):
        assert row.k_star == optimal_k(row.alpha, row.c)
        assert row.speedup == pytest.approx(walltime_speedup(row.alpha, row.k_star, row.c))
        assert row.speedup >= row.speedup_k1 - 1e-12
    assert (grid.loc[grid["alpha"] == 0, "k_star"] == 1).all() and not grid.loc[grid["alpha"] == 0, "pays"].any()
    # a verify cost that grows with k acts like a costlier draft: 1 + 0.1 k + k c = 1 + k (c + 0.1), so K* drops
    v = {k: 1 + 0.1 * k for k in range(1, 8)}
    steep = planner.optimal_k_grid(alphas, cs, verify_cost=v)
    assert (steep["k_star"].to_numpy() <= grid["k_star"].to_numpy()).all() and (steep["k_star"] < grid["k_star"]).any()
    for row in steep.itertuples(index=False):
        assert row.k_star == optimal_k(row.alpha, row.c + 0.1)
    # a fixed cost per iteration is amortised over longer iterations: 1.2 + k c = 1.2 (1 + k c / 1.2), so K* rises
    loop = planner.optimal_k_grid(alphas, cs, loop_cost=0.2)
    assert (loop["k_star"].to_numpy() >= grid["k_star"].to_numpy()).all() and (loop["k_star"] > grid["k_star"]).any()
    for row in loop.itertuples(index=False):
        assert row.k_star == optimal_k(row.alpha, row.c / 1.2)
    # per-k costs of both kinds: the argmax of Thm 3.8 with v_k + l_k
    both = planner.optimal_k_grid(alphas, cs, verify_cost=v, loop_cost=lambda k: 0.05 * k)
    for row in both.itertuples(index=False):
        speeds = [walltime_speedup(row.alpha, k, row.c, v[k] + 0.05 * k) for k in range(1, 8)]
        assert row.k_star == int(np.argmax(speeds)) + 1
    assert planner.optimal_k_grid([0.9], [0.1], k_max=3)["k_star"].iloc[0] == 3
    with pytest.raises(ValueError, match="alphas"):
        planner.optimal_k_grid([1.2], [0.1])
    with pytest.raises(ValueError, match="cs"):
        planner.optimal_k_grid([0.5], [-0.1])
    with pytest.raises(ValueError, match="at least one"):
        planner.optimal_k_grid([], [0.1])
    with pytest.raises(ValueError, match="k_max"):
        planner.optimal_k_grid([0.5], [0.1], k_max=0)


@pytest.mark.parametrize("change,message", [
    (dict(drafts={}), "drafts is empty"),
    (dict(drafts=[1, 2]), "dict name -> draft model"),
    (dict(ks=[]), "ks is empty"),
    (dict(ks=[0, 1]), "integers >= 1"),
    (dict(ks=[1, 2.5]), "integers >= 1"),
    (dict(ks=5), "iterable"),
    (dict(new_tokens=1), "new_tokens"),
    (dict(new_tokens=4), "never lets k=3"),
    (dict(costs="fast"), "costs must be"),
    (dict(alpha_ks=[1]), "alpha_ks is for"),
    (dict(prompts=[]), "prompts is empty"),
    (dict(prompts=torch.tensor([[3, 4]])), "not one tensor"),
    (dict(prompts=[torch.tensor([[3, 400]])]), "vocabulary"),
    (dict(repeats=0), "repeats"),
    (dict(latency_model=object()), "latency_model"),
    (dict(drafts="self"), "target object itself"),
    (dict(drafts="hybrid"), "proposes from the sequence alone"),
    (dict(cost_prompts=0), "cost_prompts"),
    (dict(cost_prompts=3), "cost_prompts"),
    (dict(interval_prompts=0), "interval_prompts"),
])
def test_calibrate_bad_input_raises_before_running(models, change, message):
    target, drafts = models
    kwargs = dict(drafts=drafts, prompts=PROMPTS, ks=KS, new_tokens=N_NEW, progress=False)
    kwargs.update(change)
    if kwargs["drafts"] == "self":
        kwargs["drafts"] = {"self": target}
    if kwargs["drafts"] == "hybrid":
        kwargs["drafts"] = {"hybrid": HybridDraft(drafts["copy"])}
    calls = []
    handles = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in (target, *drafts.values())]
    try:
        with pytest.raises(ValueError, match=message):
            planner.calibrate(target, kwargs.pop("drafts"), kwargs.pop("prompts"), **kwargs)
    finally:
        for h in handles:
            h.remove()
    assert calls == []


def test_validate_bad_input(models, plan):
    target, drafts = models
    calls = []
    handles = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in (target, *drafts.values())]
    try:
        with pytest.raises(ValueError, match="not in the plan"):
            planner.validate(target, drafts, plan, PROMPTS, pairs=[("copy", 5)], progress=False)
        with pytest.raises(ValueError, match="'recommended'"):
            planner.validate(target, drafts, plan, PROMPTS, pairs="best", progress=False)
        with pytest.raises(ValueError, match="not in drafts"):
            planner.validate(target, {"copy": drafts["copy"]}, plan, PROMPTS, progress=False)
        with pytest.raises(ValueError, match=r"\(draft name, schedule\)"):
            planner.validate(target, drafts, plan, PROMPTS, pairs=[], schedules={"h": HeuristicK()}, progress=False)
        with pytest.raises(ValueError, match="nothing to validate"):
            planner.validate(target, drafts, plan, PROMPTS, pairs=[], progress=False)
        with pytest.raises(ValueError, match="DataFrame"):
            planner.validate(target, drafts, plan.to_dict(), PROMPTS, progress=False)
        with pytest.raises(ValueError, match="repeats must be >= 5"):
            planner.validate(target, drafts, plan, PROMPTS, pairs=[("copy", 1)], repeats=3, progress=False)
    finally:
        for h in handles:
            h.remove()
    assert calls == []
    with pytest.raises(ValueError, match="validation lacks"):
        planner.report(pd.DataFrame({"method": ["x"]}))


# ---------------------------------------------------------------- replayed greedy acceptance
@pytest.mark.parametrize("kind", ["perturbed", "random", "copy"])
def test_replayed_match_mask_gives_the_loops_exact_counts_at_every_k(pairs, kind):
    """One teacher-forced draft forward over the target's greedy output predicts, for every k,
    the accepted and proposed tokens per iteration of speculative_generate exactly."""
    from specnb.planner import match_mask, replay, tokens_per_iteration

    target, drafts = pairs["llama"]
    draft = drafts[kind]
    masks = []
    for ids in prompts(3, seed=4):
        seq = autoregressive_generate(target, ids, 24).sequences
        mask = match_mask(seq, draft, ids.shape[1])
        masks.append(mask)
        for k in (1, 2, 3, 5, 7):
            run = speculative_generate(target, draft, ids, 24, k=k)
            rep = replay(mask, k)
            assert rep["accepted"] == list(run.accepted) and rep["proposed"] == list(run.proposed)
            assert rep["target_calls"] == run.target_calls
    table = tokens_per_iteration(masks, (1, 4)).set_index("k")
    if kind == "copy":
        assert (table["acceptance_rate"] == 1.0).all() and table.loc[4, "tokens_per_iteration"] > 4
    if kind == "random":
        assert table.loc[4, "acceptance_rate"] < 0.5


def test_replay_checks_its_inputs():
    from specnb.planner import replay
    with pytest.raises(ValueError, match="k must be"):
        replay([False, True], 0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        replay([False, True], 1, max_new_tokens=5)
    # 5 tokens: the prefill, one iteration accepting 2 of 2 (+1), then one token left: a plain target step
    assert replay([False, True, True, False, True], 2) == {"accepted": [2], "proposed": [2], "target_calls": 3}
    assert replay([False, True, False, True, True, True], 2) == {"accepted": [1, 2], "proposed": [2, 2], "target_calls": 3}


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_replayed_prompt_lookup_gives_the_loops_exact_counts(pairs, kind):
    """replay_source walks prompt lookup over the target's greedy output exactly as the loop does."""
    from specnb.planner import replay_source

    target, _ = pairs[kind]
    source = PromptLookupDraft()
    repetitive = [torch.tensor([[5, 6, 7, 5, 6, 7, 5, 6]]), *prompts(2, seed=7)]
    for ids in repetitive:
        seq = autoregressive_generate(target, ids, 20).sequences
        for k in (1, 3, 6):
            run = speculative_generate(target, source, ids, 20, k=k)
            rep = replay_source(seq, source, ids.shape[1], k)
            assert rep["accepted"] == list(run.accepted) and rep["proposed"] == list(run.proposed)
            assert rep["target_calls"] == run.target_calls


def test_plan_with_prompt_lookup_and_validation_coverage(models):
    target, drafts = models
    mixed = {"copy": drafts["copy"], "lookup": PromptLookupDraft()}
    ps = [torch.tensor([[5, 6, 7, 5, 6, 7]]), *PROMPTS]
    plan = planner.calibrate(target, mixed, ps, ks=KS, new_tokens=N_NEW, interval_prompts=2, progress=False)
    lookup = plan[plan["draft"] == "lookup"]
    assert (lookup["c"] == 0).all() and (lookup["prefill_cost"] == 0).all()  # no draft forwards
    assert (plan["interval_prompts"] == 2).all() and (plan["n_prompts"] == 3).all() and plan.attrs["level"] == 0.9
    check = planner.validate(target, mixed, plan, PROMPTS, pairs=[("lookup", 2), ("copy", 2)], new_tokens=N_NEW,
                             progress=False)
    assert list(check.columns) == planner.VALIDATION_COLUMNS
    assert (check["covered"] == ((check["predicted_lo"] <= check["measured_speedup"])
                                 & (check["measured_speedup"] <= check["predicted_hi"]))).all()
    assert (check["n_prompts"] == 2).all()
    assert "intervals cover" in planner.report(check)


def test_forecast_interval_from_prompts_and_blocks():
    """The point prediction prices the summed replay at the median costs; identical prompts and one
    cost block leave nothing to resample (a zero-width interval); prompts that differ widen it, and
    more new prompts narrow it."""
    from specnb.planner.forecast import cost_table, forecast

    k_max = 2
    block = {"pre": 0.5, "loop_ar": 0.1, "c": {2: 0.1}, "loop": {2: 0.2}, "v": {1: 1.1, 2: 1.2}}
    costs = cost_table([block], [2], k_max)
    # [iterations, plain, proposed, accepted, judged, n_1, n_2]: 3 iterations at k' = 2 accepting 2, 1, 0; 1 plain step
    f = np.array([[3, 1, 6, 3, 5, 0, 3]], float)
    t_spec = 0.5 + 0.1 * 6 + 3 * 1.2 + 1 + 4 * 0.2
    same = forecast({2: np.repeat(f, 4, axis=0)}, costs, np.full(4, 7.0)).iloc[0]
    assert same["predicted_speedup"] == pytest.approx(7 * 1.1 / t_spec)
    assert same["predicted_lo"] == pytest.approx(same["predicted_hi"]) == pytest.approx(same["predicted_speedup"])
    assert same["acceptance_rate"] == pytest.approx(3 / 5) and same["tokens_per_iteration"] == pytest.approx(2.0)
    easy = np.array([[2, 0, 4, 4, 4, 0, 2]], float)
    mixed = np.concatenate([np.repeat(f, 3, axis=0), np.repeat(easy, 3, axis=0)])
    few = forecast({2: mixed}, costs, np.full(6, 7.0), n_prompts=2).iloc[0]
    many = forecast({2: mixed}, costs, np.full(6, 7.0), n_prompts=50).iloc[0]
    assert few["predicted_lo"] < few["predicted_speedup"] < few["predicted_hi"]
    assert many["predicted_hi"] - many["predicted_lo"] < few["predicted_hi"] - few["predicted_lo"]
    two = cost_table([block, {**block, "c": {2: 0.3}}], [2], k_max)  # timing noise between blocks widens it too
    noisy = forecast({2: np.repeat(f, 4, axis=0)}, two, np.full(4, 7.0)).iloc[0]
    assert noisy["predicted_hi"] > noisy["predicted_lo"]
    with pytest.raises(ValueError, match="level"):
        forecast({2: f}, costs, np.array([7.0]), level=1.5)
    with pytest.raises(ValueError, match="prompts"):
        forecast({2: f}, costs, np.full(3, 7.0))
