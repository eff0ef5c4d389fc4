"""The planner's prediction and the plan built on it: ``calibrate`` measures every draft
(``costs``) and predicts the speedup of every (draft, k); ``recommend``, ``run_recommended`` and
``adaptive_schedule`` use the plan; ``optimal_k_grid`` gives K* over a grid of (alpha, c).

Theory (Leviathan, Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding",
ICML 2023, arXiv:2211.17192; notation of ``specnb.generate.theory``):

- alpha, the acceptance rate: alpha = E[sum_x min(p(x), q(x))] = 1 - E[D_LK(p, q)] (Def. 3.2,
  Cor. 3.6). Here it is measured instead: greedy speculative runs on the calibration prompts,
  pooled as accepted / judged draft tokens (``GenerationResult.acceptance_rate``, the MLE under
  the paper's i.i.d. assumption).
- tokens per iteration: E[#tokens] = (1 - alpha^(k+1)) / (1 - alpha) (Eq. 1; k + 1 at alpha = 1).
- walltime speedup: (1 - alpha^(k+1)) / ((1 - alpha)(k c + 1)) with c = t_draft / t_target
  (Thm 3.8). It assumes that the target scores k+1 tokens in the time of one decode step and
  that nothing but the forwards costs time.

The extension used here. Neither assumption holds for small models on a CPU: verifying k+1
tokens costs more than one target step and the loop itself (sampling, cache cropping, Python)
costs time, so Thm 3.8 alone over-predicts. The planner therefore predicts

    T_iter(k)  = k t_draft + t_verify(k+1) + t_loop(k)           (seconds per iteration)
    T_base     = t_target + t_loop_ar                             (seconds per target-only token)
    S(alpha,k) = [(1 - alpha^(k+1)) / (1 - alpha)] * T_base / T_iter(k)
               = [(1 - alpha^(k+1)) / (1 - alpha)] * (1 + l_ar) / (k c + v_k + l_k)

with t_target the target's decode step, t_draft the draft's cost per proposed token,
t_verify(k+1) the target's forward over k+1 tokens, t_loop(k) the speculative loop's time
outside the forwards per iteration and t_loop_ar the autoregressive loop's per token; c, v_k,
l_k and l_ar are the same divided by t_target. With t_verify = t_target and
t_loop = t_loop_ar = 0 this is Thm 3.8 exactly (``predicted_speedup`` and
``theory.walltime_speedup`` agree; tests check it).

The prediction is the steady-state decode speedup (TTFT excluded). The draft's prefill and the
shortened last iterations (k is capped at the tokens left) are not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..generate import GenerationResult, speculative_generate
from ..generate.schedules import AdaptiveK, per_k
from ..generate.theory import expected_tokens_per_iteration, optimal_k, walltime_speedup
from .checks import check_calibration, check_drafts, check_plan
from .costs import forward_costs, in_run_costs, measure_runs

PLAN_COLUMNS = [
    "draft", "k", "alpha", "judged", "c", "verify_cost", "loop_cost", "loop_cost_ar",
    "t_target_s", "t_draft_s", "t_verify_s", "t_loop_s", "t_loop_ar_s",
    "tokens_per_iteration", "seconds_per_iteration", "predicted_speedup", "speedup_thm38",
    "predicted_tokens_per_second", "baseline_tokens_per_second", "pays", "context", "costs",
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
    drafts: Mapping[str, torch.nn.Module],
    prompts: Sequence[torch.Tensor],
    *,
    ks: Iterable[int] = range(1, 8),
    new_tokens: int = 32,
    costs: str = "in-run",
    alpha_ks: Iterable[int] | None = None,
    repeats: int = 1,
    context: int | None = None,
    min_run_time: float = 0.2,
    latency_model=None,
    progress: bool = True,
) -> pd.DataFrame:
    """Measure alpha and the costs of every draft; predict the speedup of every (draft, k).

    Calibration runs are grouped in blocks, one per (pass, prompt, draft): greedy
    ``speculative_generate`` runs of the draft, bracketed by autoregressive runs of
    ``new_tokens`` (t_target: their mean decode step; t_loop_ar: their time outside the forwards
    per token; one run closes a block and opens the next). Every forward is timed by hooks (the
    device synced around it) and every cost is divided by the mean t_target of its block's two
    brackets, so a machine whose speed drifts still gives consistent ratios; the ratios are the
    medians over blocks. ``costs`` picks where the forward costs come from:

    - "in-run" (default): speculative runs at every k of ``ks``; t_draft = draft forward time per
      proposed token (prefill excluded; this includes the two-token draft call after a full
      acceptance), t_verify(k+1) = the mean target forward over k+1 tokens, t_loop(k) = the time
      outside the forwards per iteration. What the loop really pays, cache interplay between the
      two models included.
    - "step": ``timing.step_latency`` after ``context`` cached tokens (default: median prompt length
      + new_tokens / 2) for t_target, t_draft and t_verify(k+1), in ``max(repeats, 3)`` rotated
      rounds (median of per-round ratios); speculative runs only at ``alpha_ks`` (default: the
      smallest and largest k), whose outside time per iteration is fitted as a + b k.
    - a ``latency.LatencyModel`` given as ``latency_model`` (``costs`` is then "latency model"):
      its ``predict(model, context, tokens)`` replaces ``step_latency``; runs as for "step".

    alpha is pooled over every speculative run (accepted / judged draft tokens).

    Returns one tidy row per (draft, k) (columns ``PLAN_COLUMNS``): alpha and its ``judged``
    count, c = t_draft / t_target, verify_cost = t_verify / t_target, loop_cost = t_loop /
    t_target, the same in seconds (ratio x median t_target), tokens and seconds per iteration,
    ``predicted_speedup`` (the module docstring's S), ``speedup_thm38`` (the paper's form, for
    comparison), predicted and baseline tokens/s, and ``pays`` (predicted speedup > 1).
    ``plan.attrs`` keeps new_tokens and context.
    """
    drafts, prompts, ks, new_tokens, costs, run_ks, context = check_calibration(
        target, drafts, prompts, ks, new_tokens, costs, alpha_ks, repeats, context, min_run_time, latency_model)
    rounds = max(repeats, 3) if costs == "step" else 0
    bar = tqdm(total=1 + repeats * len(prompts) * len(drafts) * (1 + len(run_ks)) + rounds * (1 + len(ks) + len(drafts)),
               desc="calibrating", disable=not progress, leave=False)
    stats, t_target, loop_ar_ratio = measure_runs(target, drafts, prompts, run_ks, new_tokens, repeats, bar)
    if costs == "in-run":
        c, v, loop = in_run_costs(stats, drafts, ks)
    else:
        c, v, loop = forward_costs(target, drafts, ks, stats, context=context, rounds=rounds, min_run_time=min_run_time,
                                   latency_model=latency_model, bar=bar)
    bar.close()
    plan = pd.DataFrame(_plan_rows(stats, c, v, loop, ks, t_target, loop_ar_ratio, context, costs), columns=PLAN_COLUMNS)
    plan.attrs.update(new_tokens=new_tokens, context=context)
    return plan


def _plan_rows(stats, c, v, loop, ks, t_target, loop_ar_ratio, context, costs) -> list[dict]:
    """One ``PLAN_COLUMNS`` row per (draft, k): alpha pooled over the draft's runs, the cost
    ratios, the same in seconds, and the predicted speedup S of the module docstring."""
    rows = []
    for name in stats:
        judged = stats[name]["judged"]
        alpha = stats[name]["accepted"] / judged if judged else float("nan")
        for k in ks:
            tau = float(expected_tokens_per_iteration(alpha, k)) if not math.isnan(alpha) else float("nan")
            per_iter = k * c[name][k] + v[name][k] + loop[name][k]  # in target steps
            speedup = tau * (1 + loop_ar_ratio) / per_iter
            rows.append({
                "draft": name, "k": k, "alpha": alpha, "judged": judged,
                "c": c[name][k], "verify_cost": v[name][k], "loop_cost": loop[name][k], "loop_cost_ar": loop_ar_ratio,
                "t_target_s": t_target, "t_draft_s": c[name][k] * t_target, "t_verify_s": v[name][k] * t_target,
                "t_loop_s": loop[name][k] * t_target, "t_loop_ar_s": loop_ar_ratio * t_target,
                "tokens_per_iteration": tau, "seconds_per_iteration": per_iter * t_target,
                "predicted_speedup": speedup,
                "speedup_thm38": float(walltime_speedup(alpha, k, c[name][k])) if not math.isnan(alpha) else float("nan"),
                "predicted_tokens_per_second": tau / (per_iter * t_target),
                "baseline_tokens_per_second": 1.0 / ((1 + loop_ar_ratio) * t_target),
                "pays": bool(speedup > 1), "context": context, "costs": costs,
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

    alpha = float(rows["alpha"].iloc[0])
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
