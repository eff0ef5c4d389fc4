"""A speculative-decoding planner: from a few calibration prompts, measure alpha and the costs of
every candidate draft, predict the speedup of every (draft, k), recommend one, run it, and check
the prediction against an interleaved measurement.

Theory (Leviathan, Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding",
ICML 2023, arXiv:2211.17192; notation of ``specnb.theory``):

- alpha, the acceptance rate: alpha = E[sum_x min(p(x), q(x))] = 1 - E[D_LK(p, q)] (Def. 3.2,
  Cor. 3.6). Here it is measured instead: greedy speculative runs on the calibration prompts,
  pooled as accepted / judged draft tokens (``GenerationResult.acceptance_rate``, the MLE under
  the paper's i.i.d. assumption).
- tokens per iteration: E[#tokens] = (1 - alpha^(k+1)) / (1 - alpha) (Eq. 1; k + 1 at alpha = 1).
- walltime speedup: (1 - alpha^(k+1)) / ((1 - alpha)(k c + 1)) with c = t_draft / t_target
  (Thm 3.8). It assumes that the target scores k+1 tokens in the time of one decode step and
  that nothing but the forwards costs time.

The extension used here. Neither assumption holds for small models on a CPU: verifying k+1
tokens costs more than one target step (about 1.2x at k = 3 in this project's measurements) and
the loop itself (sampling, cache cropping, Python) costs time, so Thm 3.8 alone over-predicted
by about 25% in a CPU prototype. The planner therefore predicts

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

``calibrate`` measures them on short runs of the calibration prompts, every forward timed by
hooks (``costs="in-run"``, the default: what the loop really pays, including the two-token draft
forward after a full acceptance and the cache interplay of two models), or takes the forward
costs from ``timing.step_latency`` microbenchmarks (``costs="step"``, as ``measure.pair_costs``
does) or from a ``latency.LatencyModel`` and only the loop's overhead from runs. Every cost is a
ratio to a t_target measured next to it, so a drifting machine speed cancels.

The prediction is the steady-state decode speedup: ``validate`` compares it with the paired ratio
of decode tokens/s (TTFT excluded) of interleaved runs. The draft's prefill and the shortened
last iterations (k is capped at the tokens left) are not modelled, so validate with enough new
tokens (>= 32).

Typical use::

    plan = planner.calibrate(target, {"L1": d1, "L2": d2}, prompts[:4], ks=range(1, 8))
    best = planner.recommend(plan)                       # the row with the highest predicted speedup
    out = planner.run_recommended(target, drafts, plan, ids, 64)
    check = planner.validate(target, drafts, plan, prompts[4:8])
    print(planner.report(check))                         # predicted vs measured for every pair

``optimal_k_grid`` gives K* over a grid of (alpha, c) for a heat map; ``adaptive_schedule`` turns
a calibration into ``schedules.AdaptiveK`` for dynamic k.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .decoding import GenerationResult, _validate, autoregressive_generate, speculative_generate, synchronize
from .schedules import AdaptiveK, is_schedule, per_k
from .theory import expected_tokens_per_iteration, optimal_k, walltime_speedup
from .timing import PooledResult, compare, step_latency, summarize

__all__ = [
    "predicted_speedup",
    "calibrate",
    "recommend",
    "run_recommended",
    "validate",
    "report",
    "optimal_k_grid",
    "adaptive_schedule",
    "PLAN_COLUMNS",
    "VALIDATION_COLUMNS",
]

PLAN_COLUMNS = [
    "draft", "k", "alpha", "judged", "c", "verify_cost", "loop_cost", "loop_cost_ar",
    "t_target_s", "t_draft_s", "t_verify_s", "t_loop_s", "t_loop_ar_s",
    "tokens_per_iteration", "seconds_per_iteration", "predicted_speedup", "speedup_thm38",
    "predicted_tokens_per_second", "baseline_tokens_per_second", "pays", "context", "costs",
]

VALIDATION_COLUMNS = [
    "method", "draft", "k", "recommended", "predicted_speedup", "measured_speedup", "measured_q25", "measured_q75",
    "error", "speedup_thm38", "error_thm38", "alpha", "measured_acceptance_rate", "predicted_tokens_per_iteration",
    "measured_tokens_per_iteration", "predicted_tokens_per_second", "measured_tokens_per_second",
    "baseline_tokens_per_second", "repeats",
]


# --------------------------------------------------------------------------------------------
# The prediction
# --------------------------------------------------------------------------------------------


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


def _check_ks(ks, name: str = "ks") -> list[int]:
    try:
        values = list(ks)
    except TypeError:
        raise ValueError(f"{name} must be an iterable of integers >= 1, e.g. range(1, 8); got {ks!r}") from None
    if not values:
        raise ValueError(f"{name} is empty; give the draft lengths to plan for, e.g. range(1, 8)")
    out = []
    for k in values:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} must hold integers >= 1 (draft tokens per iteration); got {k!r} in {values!r}")
        out.append(int(k))
    return sorted(set(out))


def _check_drafts(drafts) -> dict:
    if not isinstance(drafts, Mapping):
        raise ValueError(f"drafts must be a dict name -> draft model; got {type(drafts).__name__}")
    if not drafts:
        raise ValueError("drafts is empty; pass a dict name -> draft model, e.g. {'L1': truncated_copy(target, 1)}")
    return dict(drafts)


def _check_prompts(prompts) -> list[torch.Tensor]:
    if isinstance(prompts, torch.Tensor):
        raise ValueError("prompts must be a list of (1, prompt_len) tensors, not one tensor; wrap it: [input_ids]")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty; give at least one (1, prompt_len) token tensor")
    return prompts


def _check_new_tokens(new_tokens) -> int:
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 2:
        raise ValueError(f"new_tokens must be an integer >= 2 (decode tokens/s needs tokens after the first); got {new_tokens!r}")
    return new_tokens


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


class _CallTimer:
    """Times every top-level forward of ``models`` (name, input tokens, seconds) during one call of
    ``fn``, syncing the device around each, plus the call's total wall time; ``outside`` is the
    rest: the decoding loop's own cost. Like ``timing.forward_share``, per call."""

    def __init__(self, models: Mapping[str, torch.nn.Module], device=None):
        self.models, self.device = dict(models), device

    def __call__(self, fn):
        calls, starts, handles = [], {}, []
        for name, model in self.models.items():
            def pre(module, args, kwargs, name=name):
                ids = kwargs.get("input_ids", args[0] if args else None)
                synchronize(self.device)
                starts[name] = (time.perf_counter(), int(ids.shape[-1]) if ids is not None else 0)

            def post(module, args, kwargs, output, name=name):
                synchronize(self.device)
                t0, tokens = starts.pop(name)
                calls.append((name, tokens, time.perf_counter() - t0))

            handles += [model.register_forward_pre_hook(pre, with_kwargs=True),
                        model.register_forward_hook(post, with_kwargs=True)]
        try:
            synchronize(self.device)
            t0 = time.perf_counter()
            result = fn()
            synchronize(self.device)
            total = time.perf_counter() - t0
        finally:
            for h in handles:
                h.remove()
        return result, calls, total


def _ar_block(timer, target, ids, new_tokens) -> dict:
    """One autoregressive run: mean target decode step (prefill excluded) and outside time per token."""
    out, calls, total = timer(lambda: autoregressive_generate(target, ids, new_tokens))
    steps = [s for name, _, s in calls[1:] if name == "target"]
    outside = total - sum(s for _, _, s in calls)
    return {"t_target": float(np.mean(steps)), "loop_ar": max(outside, 0.0) / len(steps)}


def _spec_run(timer, target, draft, ids, new_tokens, k) -> dict:
    """One greedy speculative run at constant k: acceptance counts and in-run costs per iteration."""
    out, calls, total = timer(lambda: speculative_generate(target, draft, ids, new_tokens, k=k))
    target_calls = [(n, s) for name, n, s in calls if name == "target"][1:]  # prefill excluded
    draft_calls = [s for name, _, s in calls if name == "draft"][1:]
    iterations = len(target_calls)  # verifications plus plain one-token steps at the very end
    verify = [s for n, s in target_calls if n == k + 1]
    return {
        "accepted": sum(out.accepted),
        "judged": sum(a + (a < p) for a, p in zip(out.accepted, out.proposed)),
        # per proposed token: includes the two-token draft calls that follow a full acceptance
        "t_draft": sum(draft_calls) / sum(out.proposed) if sum(out.proposed) else float("nan"),
        "t_verify": float(np.mean(verify)) if verify else float("nan"),
        "loop": max(total - sum(s for _, _, s in calls), 0.0) / iterations if iterations else float("nan"),
        "mean_k": sum(out.proposed) / iterations if iterations else float("nan"),
    }


def _fit_loop(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares a + b x of the loop's outside time per iteration against the mean k per
    iteration (b = 0 when every run used the same k)."""
    keep = [(x, y) for x, y in zip(xs, ys) if not (math.isnan(x) or math.isnan(y))]
    if not keep:
        return float("nan"), 0.0
    xs, ys = np.asarray([x for x, _ in keep]), np.asarray([y for _, y in keep])
    if np.ptp(xs) < 1e-9:
        return float(np.median(ys)), 0.0
    b, a = np.polyfit(xs, ys, 1)
    return float(a), float(b)


def _median(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.median(values)) if values else float("nan")


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
    drafts = _check_drafts(drafts)
    prompts = _check_prompts(prompts)
    ks = _check_ks(ks)
    new_tokens = _check_new_tokens(new_tokens)
    if latency_model is not None:
        if not callable(getattr(latency_model, "predict", None)):
            raise ValueError("latency_model must have predict(model, context, tokens) -> seconds, e.g. specnb.latency.calibrate()")
        costs = "latency model"
    elif costs not in ("in-run", "step"):
        raise ValueError(f"costs must be 'in-run' or 'step' (or pass latency_model=...); got {costs!r}")
    if costs == "in-run":
        if alpha_ks is not None:
            raise ValueError("alpha_ks is for costs='step' or a latency model; 'in-run' runs every k of ks")
        run_ks = ks
        if new_tokens < ks[-1] + 2:
            raise ValueError(f"new_tokens={new_tokens} never lets k={ks[-1]} draft in full (k is capped at the tokens left); "
                             f"use new_tokens >= {ks[-1] + 2}, better >= 32")
    else:
        run_ks = sorted({ks[0], ks[-1]}) if alpha_ks is None else _check_ks(alpha_ks, "alpha_ks")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1; got {repeats!r}")
    if not min_run_time > 0:
        raise ValueError(f"min_run_time must be > 0 seconds; got {min_run_time!r}")
    if context is None:
        context = int(round(float(np.median([ids.shape[1] for ids in prompts])) + new_tokens / 2))
    elif isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be an integer >= 1 (cached tokens before the timed step); got {context!r}")
    for name, draft in drafts.items():
        if draft is target:
            raise ValueError(f"draft {name!r} is the target object itself (its forwards could not be told apart); "
                             "use a copy, e.g. specnb.models.perturbed_copy(target, 0.0)")
    for ids in prompts:  # every shape, vocabulary and position check before anything runs
        for draft in drafts.values():
            _validate(target, draft, ids, new_tokens, max(ks[-1], run_ks[-1]), False, 1.0)

    device = target.device
    rounds = max(repeats, 3) if costs == "step" else 0
    bar = tqdm(total=1 + repeats * len(prompts) * len(drafts) * (1 + len(run_ks)) + rounds * (1 + len(ks) + len(drafts)),
               desc="calibrating", disable=not progress, leave=False)
    timer = {name: _CallTimer({"target": target, "draft": draft}, device) for name, draft in drafts.items()}
    ar_timer = _CallTimer({"target": target}, device)

    autoregressive_generate(target, prompts[0], new_tokens)  # warm-up
    for draft in drafts.values():
        speculative_generate(target, draft, prompts[0], new_tokens, k=run_ks[0])

    # blocks (pass, prompt, draft): the draft's speculative runs, bracketed by autoregressive runs
    # (each shared with the next block); costs are divided by the mean t_target of the two brackets
    blocks = [(r, ids, name) for r in range(repeats) for ids in prompts for name in drafts]
    ars = [_ar_block(ar_timer, target, blocks[0][1], new_tokens)]
    bar.update()
    stats = {name: {"accepted": 0, "judged": 0, "c": {k: [] for k in run_ks}, "v": {k: [] for k in run_ks},
                    "loop": {k: [] for k in run_ks}, "x": [], "y": []} for name in drafts}
    for i, (r, ids, name) in enumerate(blocks):
        runs = {}
        for k in run_ks:
            runs[k] = _spec_run(timer[name], target, drafts[name], ids, new_tokens, k)
            bar.update()
        ars.append(_ar_block(ar_timer, target, blocks[i + 1][1] if i + 1 < len(blocks) else ids, new_tokens))
        bar.update()
        step = (ars[i]["t_target"] + ars[i + 1]["t_target"]) / 2
        s = stats[name]
        for k, run in runs.items():
            if r == 0:  # greedy: every pass gives the same tokens
                s["accepted"] += run["accepted"]
                s["judged"] += run["judged"]
            s["c"][k].append(run["t_draft"] / step)
            s["v"][k].append(run["t_verify"] / step)
            s["loop"][k].append(run["loop"] / step)
            s["x"].append(run["mean_k"])
            s["y"].append(run["loop"] / step)
    t_targets = [a["t_target"] for a in ars]
    loop_ar = [a["loop_ar"] / a["t_target"] for a in ars]
    t_target = _median(t_targets)
    loop_ar_ratio = _median(loop_ar)

    if costs == "in-run":
        c = {name: {k: _median(stats[name]["c"][k]) for k in ks} for name in drafts}  # per k: 2-token draft calls vary with k
        v = {name: {k: _median(stats[name]["v"][k]) for k in ks} for name in drafts}
        loop = {name: {k: _median(stats[name]["loop"][k]) for k in ks} for name in drafts}
    else:
        jobs = [("target", target, 1)] + [(("verify", k), target, k + 1) for k in ks] + [(("draft", n), d, 1) for n, d in drafts.items()]
        if costs == "step":  # rotated rounds; the median of per-round ratios cancels drift
            per_round = []
            for r in range(rounds):
                measured = {}
                for key, model, tokens in jobs[r % len(jobs):] + jobs[: r % len(jobs)]:
                    measured[key] = step_latency(model, context=context, tokens=tokens, min_run_time=min_run_time)["median_s"]
                    bar.update()
                per_round.append(measured)
        else:
            per_round = [{key: float(latency_model.predict(model, context, tokens)) for key, model, tokens in jobs}]
        ratios = {key: _median([m[key] / m["target"] for m in per_round]) for key, _, _ in jobs}
        c = {name: {k: ratios[("draft", name)] for k in ks} for name in drafts}
        v = {name: {k: ratios[("verify", k)] for k in ks} for name in drafts}
        loop = {}
        for name in drafts:
            a, b = _fit_loop(stats[name]["x"], stats[name]["y"])
            loop[name] = {k: max(a + b * k, 0.0) for k in ks}
    bar.close()

    rows = []
    for name in drafts:
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
    plan = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    plan.attrs.update(new_tokens=new_tokens, context=context)
    return plan


def _check_plan(plan) -> None:
    if not isinstance(plan, pd.DataFrame):
        raise ValueError(f"plan must be the DataFrame returned by planner.calibrate; got {type(plan).__name__}")
    missing = [c for c in ("draft", "k", "predicted_speedup") if c not in plan.columns]
    if missing:
        raise ValueError(f"plan lacks columns {missing}; pass the DataFrame returned by planner.calibrate")
    if plan.empty:
        raise ValueError("plan is empty; calibrate at least one draft and one k")


def recommend(plan: pd.DataFrame, *, draft: str | None = None) -> pd.Series:
    """The row of ``plan`` with the highest predicted speedup (first on ties: the calibration order
    of drafts, then the smaller k), optionally among one ``draft``'s rows. Check ``row.pays``:
    when even the best pair predicts a speedup below 1, plain target decoding is faster."""
    _check_plan(plan)
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
    drafts = _check_drafts(drafts)
    best = recommend(plan)
    if best["draft"] not in drafts:
        raise ValueError(f"the recommended draft {best['draft']!r} is not among drafts {sorted(drafts)}")
    return speculative_generate(target, drafts[best["draft"]], input_ids, max_new_tokens, k=int(best["k"]), **kwargs)


def adaptive_schedule(plan: pd.DataFrame, draft: str, *, decay: float = 0.9, prior_strength: float = 2.0) -> AdaptiveK:
    """``schedules.AdaptiveK`` with ``draft``'s calibrated costs per k (c, verify_cost, loop_cost;
    linearly interpolated between the plan's ks when they skip some), k from the plan's smallest
    to its largest k, and a Beta prior of ``prior_strength`` pseudo-counts centred on the
    calibrated alpha."""
    _check_plan(plan)
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


# --------------------------------------------------------------------------------------------
# Validation: predicted vs measured, interleaved
# --------------------------------------------------------------------------------------------


def validate(
    target,
    drafts: Mapping[str, torch.nn.Module],
    plan: pd.DataFrame,
    prompts: Sequence[torch.Tensor],
    *,
    pairs: Iterable[tuple[str, int]] | str | None = None,
    new_tokens: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    schedules: Mapping[str, tuple[str, object]] | None = None,
    progress: bool = True,
    return_runs: bool = False,
):
    """Measure the speedup of (draft, k) pairs over target-only greedy decoding and set it beside
    the plan's prediction.

    Every method decodes all ``prompts`` (greedy, ``new_tokens`` each; default the plan's) per
    call; methods run interleaved and rotated (``timing.compare``, ``repeats`` >= 5 after
    ``warmup``), and the measured speedup is the median over repeats of the paired ratio of
    decode tokens/s to the target's (``timing.summarize``). ``pairs``: None (every row of the
    plan), "recommended", or an iterable of (draft, k). ``schedules`` adds dynamic-k methods,
    {label: (draft name, schedule)}, measured alike (no prediction: NaN).

    Returns one row per method (columns ``VALIDATION_COLUMNS``): predicted and measured speedup
    with the measured quartiles, error = predicted / measured - 1 (and the same for Thm 3.8
    alone), calibrated vs measured alpha and tokens per iteration (to tell an error in alpha from
    one in the costs) and tokens/s; with ``return_runs``, also the per-repeat rows.
    """
    drafts = _check_drafts(drafts)
    _check_plan(plan)
    prompts = _check_prompts(prompts)
    new_tokens = _check_new_tokens(plan.attrs.get("new_tokens", 32) if new_tokens is None else new_tokens)
    if pairs is None:
        chosen = [(str(d), int(k)) for d, k in zip(plan["draft"], plan["k"])]
    elif isinstance(pairs, str):
        if pairs != "recommended":
            raise ValueError(f"pairs must be None (all), 'recommended' or an iterable of (draft, k); got {pairs!r}")
        best = recommend(plan)
        chosen = [(str(best["draft"]), int(best["k"]))]
    else:
        try:
            chosen = [(str(d), int(k)) for d, k in pairs]
        except (TypeError, ValueError):
            raise ValueError(f"pairs must be an iterable of (draft name, k) tuples; got {pairs!r}") from None
    known = {(str(d), int(k)) for d, k in zip(plan["draft"], plan["k"])}
    unknown = [p for p in chosen if p not in known]
    if unknown:
        raise ValueError(f"pairs {unknown} are not in the plan; calibrate them first (plan has {sorted(known)})")
    schedules = dict(schedules or {})
    for label, spec in schedules.items():
        if not (isinstance(spec, tuple) and len(spec) == 2 and is_schedule(spec[1])):
            raise ValueError(f"schedules[{label!r}] must be (draft name, schedule), e.g. ('L1', HeuristicK()); got {spec!r}")
    used = {d for d, _ in chosen} | {spec[0] for spec in schedules.values()}
    missing = sorted(used - set(drafts))
    if missing:
        raise ValueError(f"drafts {missing} are in the pairs or schedules but not in drafts {sorted(drafts)}")
    if not chosen and not schedules:
        raise ValueError("nothing to validate: pairs is empty and no schedules were given")
    for ids in prompts:
        for d in used:
            _validate(target, drafts[d], ids, new_tokens, max([k for _, k in chosen], default=1), False, 1.0)

    def spec_method(draft, k, label):
        return lambda: PooledResult([speculative_generate(target, draft, ids, new_tokens, k=k) for ids in prompts], label, k)

    methods = {"target": lambda: PooledResult([autoregressive_generate(target, ids, new_tokens) for ids in prompts], "target", None)}
    meta = {}
    for d, k in chosen:
        label = f"{d} k={k}"
        methods[label] = spec_method(drafts[d], k, label)
        meta[label] = (d, k)
    for label, (d, schedule) in schedules.items():
        name = f"{d} {label}"
        if name in methods:
            raise ValueError(f"schedule label {label!r} collides with method {name!r}; rename it")
        methods[name] = spec_method(drafts[d], schedule, name)
        meta[name] = (d, label)
    runs = compare(methods, repeats=repeats, warmup=warmup, progress=progress, device=target.device)
    table = summarize(runs, baseline="target").set_index("method")
    per_iter = runs.groupby("method")["tokens_per_iteration"].median()
    base_tps = table.loc["target", "tokens_per_second_median"]

    best = recommend(plan)
    lookup = {(str(r["draft"]), int(r["k"])): r for r in plan.to_dict("records")}
    rows = []
    for name, (d, k) in meta.items():
        row = lookup[(d, k)] if isinstance(k, int) else None
        measured = float(table.loc[name, "ratio_vs_target"])
        predicted = float(row["predicted_speedup"]) if row is not None else float("nan")
        thm38 = float(row["speedup_thm38"]) if row is not None and "speedup_thm38" in row else float("nan")
        rows.append({
            "method": name, "draft": d, "k": k,
            "recommended": row is not None and (d, k) == (str(best["draft"]), int(best["k"])),
            "predicted_speedup": predicted, "measured_speedup": measured,
            "measured_q25": float(table.loc[name, "ratio_q25"]), "measured_q75": float(table.loc[name, "ratio_q75"]),
            "error": predicted / measured - 1, "speedup_thm38": thm38, "error_thm38": thm38 / measured - 1,
            "alpha": float(row["alpha"]) if row is not None else float("nan"),
            "measured_acceptance_rate": float(table.loc[name, "acceptance_rate_median"]),
            "predicted_tokens_per_iteration": float(row["tokens_per_iteration"]) if row is not None else float("nan"),
            "measured_tokens_per_iteration": float(per_iter[name]),
            "predicted_tokens_per_second": float(row["predicted_tokens_per_second"]) if row is not None else float("nan"),
            "measured_tokens_per_second": float(table.loc[name, "tokens_per_second_median"]),
            "baseline_tokens_per_second": float(base_tps), "repeats": int(table.loc[name, "repeats"]),
        })
    out = pd.DataFrame(rows, columns=VALIDATION_COLUMNS)
    return (out, runs) if return_runs else out


def report(validation: pd.DataFrame, tolerance: float = 0.10) -> str:
    """One line per method: predicted vs measured speedup, the error, and whether it is within
    ``tolerance``; then how many pairs met it (Thm 3.8 alone alongside)."""
    missing = [c for c in ("method", "predicted_speedup", "measured_speedup", "error") if c not in validation.columns]
    if missing:
        raise ValueError(f"validation lacks columns {missing}; pass the DataFrame returned by planner.validate")
    lines = []
    for r in validation.itertuples(index=False):
        mark = "*" if getattr(r, "recommended", False) else " "
        if math.isnan(r.predicted_speedup):
            lines.append(f"{mark} {r.method:<28} measured {r.measured_speedup:5.2f}x (no prediction)")
            continue
        ok = "ok" if abs(r.error) <= tolerance else "off"
        lines.append(f"{mark} {r.method:<28} predicted {r.predicted_speedup:5.2f}x  measured {r.measured_speedup:5.2f}x "
                     f"[{r.measured_q25:.2f}, {r.measured_q75:.2f}]  error {r.error:+6.1%} {ok}"
                     + (f"  (Thm 3.8 alone {r.speedup_thm38:5.2f}x, {r.error_thm38:+6.1%})" if "speedup_thm38" in validation else ""))
    predicted = validation[validation["predicted_speedup"].notna()]
    if len(predicted):
        within = int((predicted["error"].abs() <= tolerance).sum())
        line = f"{within}/{len(predicted)} pairs within {tolerance:.0%}"
        if "error_thm38" in predicted:
            line += f" (Thm 3.8 alone: {int((predicted['error_thm38'].abs() <= tolerance).sum())}/{len(predicted)})"
        lines.append(line + "; * = recommended")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# K* over (alpha, c)
# --------------------------------------------------------------------------------------------


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
