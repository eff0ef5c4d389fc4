"""The planner's plan: ``calibrate`` replays every draft's greedy acceptance on the calibration
prompts (``runs``), measures its costs (``costs``) and predicts the speedup of every (draft, k)
with a prediction interval (``forecast``); ``recommend``, ``run_recommended`` and
``adaptive_schedule`` use the plan; ``optimal_k_grid`` gives K* over a grid of (alpha, c).

Theory (Leviathan, Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding",
ICML 2023, arXiv:2211.17192; notation of ``specnb.generate.theory``):

- alpha, the acceptance rate: alpha = E[sum_x min(p(x), q(x))] = 1 - E[D_LK(p, q)] (Def. 3.2,
  Cor. 3.6), measured here as accepted / judged draft tokens (``GenerationResult.acceptance_rate``,
  the MLE under the paper's i.i.d. assumption).
- tokens per iteration under i.i.d. acceptance: E[#tokens] = (1 - alpha^(k+1)) / (1 - alpha) (Eq. 1).
- walltime speedup: (1 - alpha^(k+1)) / ((1 - alpha)(k c + 1)) with c = t_draft / t_target
  (Thm 3.8). It assumes that the target scores k+1 tokens in the time of one decode step and
  that nothing but the forwards costs time.

None of the three assumptions holds for small models on a CPU: verifying k+1 tokens costs more
than one target step, the loop itself (sampling, cache cropping, Python) costs time, and greedy
acceptance comes in bursts (a draft follows the target through a stretch or fails at once), so
Eq. 1 with one alpha mispredicts tokens per iteration. The plan's ``predicted_speedup`` therefore
replays each prompt's acceptance exactly and prices every iteration at the measured costs
(``forecast``'s docstring). For comparison it also carries the i.i.d. prediction with the same
measured costs (``predicted_speedup_iid``):

    S_iid(alpha, k) = [(1 - alpha^(k+1)) / (1 - alpha)] * (1 + l_ar) / (k c + v_k + l_k)

with c, v_k (the target's forward over k+1 tokens), l_k (the loop's time outside the forwards per
iteration) and l_ar (the autoregressive loop's per token) relative to one target decode step;
with v_k = 1 and l_k = l_ar = 0 this is Thm 3.8 exactly (``predicted_speedup`` and
``theory.walltime_speedup`` agree; tests check it), reported as ``speedup_thm38``.

Both predict the steady-state decode speedup (TTFT excluded); the replayed one also counts the
draft's prefill and the last iterations, where k is capped at the tokens left.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..generate import GenerationResult, autoregressive_generate, speculative_generate
from ..generate.schedules import AdaptiveK, per_k
from ..generate.theory import expected_tokens_per_iteration, optimal_k, walltime_speedup
from .checks import check_calibration, check_drafts, check_plan
from .costs import forward_costs, measure_runs, median
from .forecast import cost_medians, cost_table, forecast, pooled_verify
from .runs import match_mask, replay, replay_features, replay_source

PLAN_COLUMNS = [
    "draft", "k", "predicted_speedup", "predicted_lo", "predicted_hi", "level", "interval_prompts", "n_prompts",
    "alpha", "judged", "tokens_per_iteration", "c", "prefill_cost", "verify_cost", "loop_cost", "loop_cost_ar",
    "t_target_s", "t_draft_s", "t_verify_s", "t_loop_s", "t_loop_ar_s", "seconds_per_iteration",
    "predicted_tokens_per_second", "baseline_tokens_per_second", "alpha_iid", "tokens_per_iteration_iid",
    "predicted_speedup_iid", "speedup_thm38", "pays", "context", "costs",
]


def predicted_speedup(alpha, k, *, t_target, t_draft, t_verify=None, t_loop=0.0, t_loop_ar=0.0):
    """S = [(1 - alpha^(k+1)) / (1 - alpha)] (t_target + t_loop_ar) / (k t_draft + t_verify + t_loop).

    Times in seconds (or any common unit); ``t_verify`` is the target's forward over k+1 tokens
    (default ``t_target``: Leviathan et al.'s assumption), ``t_loop`` the speculative loop's time
    outside the forwards per iteration, ``t_loop_ar`` the autoregressive loop's per token. With
    the defaults this is Thm 3.8 with c = t_draft / t_target. Broadcasts over NumPy arrays."""
    t_target = np.asarray(t_target, dtype=float)
    t_draft = np.asarray(t_draft, dtype=float)
    t_verify = t_target if t_verify is None else np.asarray(t_verify, dtype=float)
    t_loop, t_loop_ar = np.asarray(t_loop, dtype=float), np.asarray(t_loop_ar, dtype=float)
    if np.any(t_target <= 0) or np.any(t_verify <= 0):
        raise ValueError(f"t_target and t_verify must be > 0; got {t_target!r}, {t_verify!r}")
    if np.any(t_draft < 0) or np.any(t_loop < 0) or np.any(t_loop_ar < 0):
        raise ValueError("t_draft, t_loop and t_loop_ar must be >= 0")
    kk = np.asarray(k, dtype=float)
    out = np.asarray(expected_tokens_per_iteration(alpha, k)) * (t_target + t_loop_ar) / (kk * t_draft + t_verify + t_loop)
    return out.item() if out.ndim == 0 else out


# --------------------------------------------------------------------------------------------
# Input checks (all before anything runs)
# --------------------------------------------------------------------------------------------


def calibrate(
    target,
    drafts: Mapping[str, object],
    prompts: Sequence[torch.Tensor],
    *,
    ks: Iterable[int] = range(1, 8),
    new_tokens: int = 32,
    costs: str = "in-run",
    alpha_ks: Iterable[int] | None = None,
    repeats: int = 1,
    cost_prompts: int | None = None,
    context: int | None = None,
    min_run_time: float = 0.2,
    latency_model=None,
    level: float = 0.9,
    interval_prompts: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Measure every draft on ``prompts`` and predict the decode speedup of every (draft, k), with
    a ``level`` prediction interval for a new set of ``interval_prompts`` prompts (default: as many
    as ``prompts``).

    ``drafts``: name -> draft model, or a draft source that proposes from the sequence alone
    (``PromptLookupDraft()``: no draft forwards; its lookups are loop time).

    Acceptance (``runs``): the target's greedy continuation of every prompt, and for a model one
    teacher-forced draft forward over it (``match_mask``), replayed at every k (``replay``; a
    source: ``replay_source``) give each prompt's exact iterations, proposals and acceptances.

    Costs: timed blocks, one per (pass, prompt, draft) over the first ``cost_prompts`` prompts
    (default all): greedy ``speculative_generate`` runs of the draft, bracketed by
    autoregressive runs of ``new_tokens`` (t_target: their mean decode step; t_loop_ar: their time
    outside the forwards per token; one run closes a block and opens the next). Every forward is
    timed by hooks (the device synced around it) and every cost is divided by the mean t_target of
    its block's brackets, so a machine whose speed drifts still gives consistent ratios; the
    costs are the medians over blocks. ``costs`` picks where the forward costs come from:

    - "in-run" (default): speculative runs at every k of ``ks``; the draft's prefill, its time per
      proposed token (including the two-token draft call after a full acceptance), the target's
      forward over k' + 1 tokens for every k' the runs verified, and the loop's time outside the
      forwards per iteration. What the loop really pays, cache interplay between the models included.
    - "step": ``timing.step_latency`` after ``context`` cached tokens (default: median prompt length
      + new_tokens / 2) for t_target, t_draft and t_verify(k+1), in ``max(repeats, 3)`` rotated
      rounds (median of per-round ratios); speculative runs only at ``alpha_ks`` (default: the
      smallest and largest k), whose outside time per iteration is fitted as a + b k.
    - a ``latency.LatencyModel`` given as ``latency_model`` (``costs`` is then "latency model"):
      its ``predict(model, context, tokens)`` replaces ``step_latency``; runs as for "step".

    The prediction (``forecast``): each prompt's replayed iterations priced at the costs, summed
    over prompts; the interval is a two-stage bootstrap over prompts and cost blocks (``seed``).

    Returns one tidy row per (draft, k) (columns ``PLAN_COLUMNS``): predicted_speedup with
    predicted_lo / predicted_hi, the replayed alpha (accepted / judged at this k) and tokens per
    iteration, the costs in target steps (c, prefill_cost, verify_cost at k' = k, loop_cost,
    loop_cost_ar) and in seconds, predicted and baseline tokens/s, and for comparison the
    i.i.d. prediction (one alpha per draft pooled over every k: ``alpha_iid``,
    ``tokens_per_iteration_iid`` by Leviathan et al.'s Eq. 1, ``predicted_speedup_iid`` by the
    module docstring's S) and Thm 3.8 alone (``speedup_thm38``). ``pays``: predicted speedup > 1.
    ``plan.attrs`` keeps new_tokens, context, level and interval_prompts.
    """
    drafts, prompts, ks, new_tokens, costs, run_ks, context = check_calibration(
        target, drafts, prompts, ks, new_tokens, costs, alpha_ks, repeats, context, min_run_time, latency_model)
    timed = prompts if cost_prompts is None else prompts[: check_count(cost_prompts, len(prompts), "cost_prompts")]
    interval_prompts = len(prompts) if interval_prompts is None else check_count(interval_prompts, None, "interval_prompts")
    rounds = max(repeats, 3) if costs == "step" else 0
    bar = tqdm(total=len(prompts) * (1 + len(drafts)) + 1 + repeats * len(timed) * len(drafts) * (1 + len(run_ks))
               + rounds * (1 + len(ks) + len(drafts)), desc="calibrating", disable=not progress, leave=False)
    features, decode = replay_prompts(target, drafts, prompts, ks, new_tokens, bar)
    stats, t_target, loop_ar_ratio = measure_runs(target, drafts, timed, run_ks, new_tokens, repeats, bar)
    k_max = max(ks)
    if costs == "in-run":
        tables = {name: cost_table(stats[name]["blocks"], ks, k_max) for name in drafts}
    else:
        c, v, loop = forward_costs(target, drafts, ks, stats, context=context, rounds=rounds, min_run_time=min_run_time,
                                   latency_model=latency_model, bar=bar)
        tables = {name: cost_table([{"pre": median([b["pre"] for b in stats[name]["blocks"]]), "loop_ar": loop_ar_ratio,
                                     "c": c[name], "loop": loop[name], "v": {k: v[name][k] for k in ks}}], ks, k_max)
                  for name in drafts}
    bar.close()
    verify = pooled_verify(list(tables.values()))  # where a draft's own blocks verified no k' tokens
    rows = []
    for name in drafts:
        predicted = forecast(features[name], tables[name], decode, n_prompts=interval_prompts, level=level,
                             seed=seed, verify_fallback=verify).set_index("k")
        rows += _plan_rows(name, features[name], predicted, cost_medians(tables[name], verify), ks, t_target, context,
                           costs, level, interval_prompts, len(prompts))
    plan = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    plan.attrs.update(new_tokens=new_tokens, context=context, level=level, interval_prompts=interval_prompts)
    return plan


def check_count(value, most: int | None, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1 or (most is not None and value > most):
        bound = f" and <= {most} (the prompts given)" if most is not None else ""
        raise ValueError(f"{name} must be an integer >= 1{bound}; got {value!r}")
    return int(value)


def replay_prompts(target, drafts, prompts, ks, new_tokens: int, bar):
    """Per draft, per k: the (prompts, features) array of ``runs.replay_features`` from the
    target's greedy continuation of every prompt; and (prompts,) decode tokens (N - 1)."""
    k_max = max(ks)
    features = {name: {k: [] for k in ks} for name in drafts}
    decode = []
    for ids in prompts:
        out = autoregressive_generate(target, ids, new_tokens)
        bar.update()
        decode.append(out.num_new_tokens - 1)
        for name, draft in drafts.items():
            if isinstance(draft, torch.nn.Module):
                mask = match_mask(out.sequences, draft, ids.shape[1])
                runs = {k: replay(mask, k, out.num_new_tokens) for k in ks}
            else:
                runs = {k: replay_source(out.sequences, draft, ids.shape[1], k) for k in ks}
            for k in ks:
                features[name][k].append(replay_features(runs[k], k_max))
            bar.update()
    return {n: {k: np.stack(f) for k, f in per_k.items()} for n, per_k in features.items()}, np.asarray(decode, float)


def _plan_rows(name, features, predicted, med, ks, t_target, context, costs, level, interval_prompts, n_prompts) -> list[dict]:
    """One ``PLAN_COLUMNS`` row per k of draft ``name``: the replayed prediction and its interval,
    the median costs in target steps and seconds, and the i.i.d. prediction beside it."""
    loop_ar = float(med["loop_ar"])
    pooled = np.sum([f.sum(0) for f in features.values()], axis=0)
    alpha_iid = pooled[3] / pooled[4] if pooled[4] else float("nan")  # one alpha per draft, over every k
    rows = []
    for k in ks:
        p = predicted.loc[k]
        c, v, loop, pre = float(med[f"c_{k}"]), float(med[f"v_{k}"]), float(med[f"loop_{k}"]), float(med["pre"])
        tau_iid = float(expected_tokens_per_iteration(alpha_iid, k)) if not math.isnan(alpha_iid) else float("nan")
        per_iter = k * c + v + loop  # target steps
        base_tps = 1.0 / ((1 + loop_ar) * t_target)
        judged = int(features[k][:, 4].sum())
        rows.append({
            "draft": name, "k": k, "predicted_speedup": p["predicted_speedup"], "predicted_lo": p["predicted_lo"],
            "predicted_hi": p["predicted_hi"], "level": level, "interval_prompts": interval_prompts, "n_prompts": n_prompts,
            "alpha": p["acceptance_rate"], "judged": judged, "tokens_per_iteration": p["tokens_per_iteration"],
            "c": c, "prefill_cost": pre, "verify_cost": v, "loop_cost": loop, "loop_cost_ar": loop_ar,
            "t_target_s": t_target, "t_draft_s": c * t_target, "t_verify_s": v * t_target, "t_loop_s": loop * t_target,
            "t_loop_ar_s": loop_ar * t_target,
            "seconds_per_iteration": p["tokens_per_iteration"] / (p["predicted_speedup"] * base_tps),
            "predicted_tokens_per_second": p["predicted_speedup"] * base_tps, "baseline_tokens_per_second": base_tps,
            "alpha_iid": alpha_iid, "tokens_per_iteration_iid": tau_iid,
            "predicted_speedup_iid": tau_iid * (1 + loop_ar) / per_iter,
            "speedup_thm38": float(walltime_speedup(alpha_iid, k, c)) if not math.isnan(alpha_iid) else float("nan"),
            "pays": bool(p["predicted_speedup"] > 1), "context": context, "costs": costs,
        })
    return rows


def recommend(plan: pd.DataFrame, *, draft: str | None = None) -> pd.Series:
    """The row of ``plan`` with the highest predicted speedup (first on ties: the calibration order
    of drafts, then the smaller k), optionally among one ``draft``'s rows. Check ``row.pays``:
    when even the best pair predicts a speedup below 1, plain target decoding is faster."""
    check_plan(plan)
    rows = plan
    if draft is not None:
        rows = plan[plan["draft"] == draft]
        if rows.empty:
            raise ValueError(f"draft {draft!r} is not in the plan; it has {sorted(set(plan['draft']))}")
    speed = pd.to_numeric(rows["predicted_speedup"], errors="coerce")
    if speed.isna().all():
        raise ValueError("no row of the plan has a predicted speedup (alpha could not be measured)")
    return rows.loc[speed.idxmax()]


def run_recommended(target, drafts: Mapping[str, torch.nn.Module], plan: pd.DataFrame, input_ids: torch.Tensor,
                    max_new_tokens: int, **kwargs) -> GenerationResult:
    """``speculative_generate`` with the recommended draft and k (``kwargs`` are passed on)."""
    drafts = check_drafts(drafts)
    best = recommend(plan)
    if best["draft"] not in drafts:
        raise ValueError(f"the recommended draft {best['draft']!r} is not among drafts {sorted(drafts)}")
    return speculative_generate(target, drafts[best["draft"]], input_ids, max_new_tokens, k=int(best["k"]), **kwargs)


def adaptive_schedule(plan: pd.DataFrame, draft: str, *, decay: float = 0.9, prior_strength: float = 2.0) -> AdaptiveK:
    """``schedules.AdaptiveK`` with ``draft``'s calibrated costs per k (c, verify_cost, loop_cost;
    linearly interpolated between the plan's ks when they skip some), k from the plan's smallest
    to its largest k, and a Beta prior of ``prior_strength`` pseudo-counts centred on the
    calibrated alpha."""
    check_plan(plan)
    rows = plan[plan["draft"] == draft].sort_values("k")
    if rows.empty:
        raise ValueError(f"draft {draft!r} is not in the plan; it has {sorted(set(plan['draft']))}")
    if not prior_strength > 0:
        raise ValueError(f"prior_strength must be > 0 pseudo-counts; got {prior_strength!r}")
    ks = rows["k"].astype(int).to_numpy()
    span = list(range(int(ks[0]), int(ks[-1]) + 1))

    def interp(column):
        return dict(zip(span, np.interp(span, ks, rows[column].astype(float).to_numpy()).tolist()))

    alpha = float(rows["alpha_iid" if "alpha_iid" in rows else "alpha"].iloc[0])  # one alpha per draft
    alpha = 0.5 if math.isnan(alpha) else min(max(alpha, 0.0), 1.0)
    prior = (max(alpha * prior_strength, 1e-3), max((1 - alpha) * prior_strength, 1e-3))
    return AdaptiveK(interp("c"), interp("verify_cost"), k_min=span[0], k_max=span[-1], loop_cost=interp("loop_cost"),
                     prior=prior, decay=decay)



def optimal_k_grid(alphas: Iterable[float], cs: Iterable[float], *, verify_cost=1.0, loop_cost=0.0,
                   k_max: int = 7) -> pd.DataFrame:
    """K* = argmax over k in 1..k_max of (1 - a^(k+1)) / ((1 - a)(k c + v_k + l_k)) for every
    (alpha, c): one tidy row each with k_star, the speedup at K*, the speedup at k = 1 and
    ``pays`` (speedup > 1). ``verify_cost`` and ``loop_cost`` (relative to a target step) are
    numbers or per-k (mapping k -> cost, or a callable); with numbers this is
    ``theory.optimal_k(alpha, c, k_max, verify_cost + loop_cost)`` (ties: the smaller k).
    ``df.pivot(index="alpha", columns="c", values="k_star")`` is the heat map."""
    alphas, cs = [float(a) for a in alphas], [float(c) for c in cs]
    if not alphas or not cs:
        raise ValueError("alphas and cs must each hold at least one value")
    if any(not 0 <= a <= 1 for a in alphas):
        raise ValueError(f"alphas must lie in [0, 1]; got {alphas}")
    if any(not c >= 0 for c in cs):
        raise ValueError(f"cs (draft/target cost ratios) must be >= 0; got {cs}")
    if isinstance(k_max, bool) or not isinstance(k_max, (int, np.integer)) or k_max < 1:
        raise ValueError(f"k_max must be an integer >= 1; got {k_max!r}")
    ks = list(range(1, int(k_max) + 1))
    scalar = not (isinstance(verify_cost, Mapping) or callable(verify_cost) or isinstance(loop_cost, Mapping) or callable(loop_cost))
    v = per_k(verify_cost, ks, "verify_cost")
    lo = per_k(loop_cost, ks, "loop_cost", allow_zero=True)
    rows = []
    for a in alphas:
        for c in cs:
            speed = {k: float(walltime_speedup(a, k, c, v[k] + lo[k])) for k in ks}
            if scalar:
                k_star = optimal_k(a, c, k_max=int(k_max), verify_cost=v[1] + lo[1])
            else:
                best = max(speed.values())
                k_star = min(k for k in ks if speed[k] >= best * (1 - 1e-12))  # ties (to rounding): the smaller k
            rows.append({"alpha": a, "c": c, "k_star": int(k_star), "speedup": speed[k_star], "speedup_k1": speed[1],
                         "pays": speed[k_star] > 1})
    return pd.DataFrame(rows)
