"""Measuring what a draft costs: the per-iteration costs of the speculative loop,
from timed greedy runs on calibration prompts (``planner.calibrate`` assembles the plan).

Every top-level forward is timed by hooks with the device synced around it; the time outside
the forwards is the decoding loop's own cost. Every cost is divided by a target decode step
measured next to it (the mean of the autoregressive runs bracketing its block), so a machine
whose speed drifts still gives consistent ratios; the ratios are the medians over blocks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..generate import autoregressive_generate, speculative_generate
from ..hooks import ForwardTimer
from ..timing import rotated, step_latency


class CallTimer:
    """Times every top-level forward of ``models`` (name, input tokens, seconds) during one call of
    ``fn``, syncing the device around each, plus the call's total wall time; ``outside`` is the
    rest: the decoding loop's own cost. Like ``timing.forward_share``, per call."""

    def __init__(self, models: Mapping[str, torch.nn.Module], device=None):
        self.models, self.device = dict(models), device

    def __call__(self, fn):
        with ForwardTimer(self.models, self.device) as timer:
            result = fn()
        return result, timer.calls, timer.total


def _ar_block(timer, target, ids, new_tokens) -> dict:
    """One autoregressive run: mean target decode step (prefill excluded) and outside time per token."""
    out, calls, total = timer(lambda: autoregressive_generate(target, ids, new_tokens))
    steps = [s for name, _, s in calls[1:] if name == "target"]
    outside = total - sum(s for _, _, s in calls)
    return {"t_target": float(np.mean(steps)), "loop_ar": max(outside, 0.0) / len(steps)}


def _spec_run(timer, target, draft, ids, new_tokens, k) -> dict:
    """One greedy speculative run at constant k: its in-run costs, in seconds: the draft's
    prefill, its time per proposed token, the target's forwards by draft tokens verified (0: a
    plain step), and the loop's time outside the forwards per iteration. A draft source without a
    model (prompt lookup) has no draft forwards: its lookups are loop time."""
    out, calls, total = timer(lambda: speculative_generate(target, draft, ids, new_tokens, k=k))
    target_calls = [(n, s) for name, n, s in calls if name == "target"][1:]  # prefill excluded
    draft_calls = [s for name, _, s in calls if name == "draft"]
    iterations = len(target_calls)  # verifications plus plain one-token steps
    verify: dict[int, list[float]] = {}
    for n, s in target_calls:
        verify.setdefault(n - 1, []).append(s)
    return {
        "pre": draft_calls[0] if draft_calls else 0.0,
        # per proposed token: includes the two-token draft calls that follow a full acceptance
        "t_draft": sum(draft_calls[1:]) / sum(out.proposed) if sum(out.proposed) else float("nan"),
        "verify": verify,
        "loop": max(total - sum(s for _, _, s in calls), 0.0) / iterations if iterations else float("nan"),
        "mean_k": sum(out.proposed) / iterations if iterations else float("nan"),
    }


def fit_loop(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
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


def median(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.median(values)) if values else float("nan")


def measure_runs(target, drafts: Mapping[str, object], prompts, run_ks, new_tokens: int, repeats: int, bar):
    """Warm up, then run the calibration blocks, one per (pass, prompt, draft): the draft's greedy
    speculative runs at every k of ``run_ks``, bracketed by autoregressive runs (each shared with
    the next block). Returns (stats, t_target, loop_ar_ratio): per draft (x, y) = (mean k, loop
    ratio) per run (``fit_loop``) and ``blocks``: per block the draft's prefill, c and loop per k,
    the verify cost per draft tokens verified k' (median over the block's runs) and the brackets'
    loop_ar, all in target steps, each divided by the mean t_target of the block's brackets
    (``forecast.cost_table``); t_target is the median target decode step in
    seconds and loop_ar_ratio the median autoregressive outside time per token over t_target."""
    device = target.device
    timer = {name: CallTimer({"target": target, **({"draft": d} if isinstance(d, torch.nn.Module) else {})}, device)
             for name, d in drafts.items()}
    ar_timer = CallTimer({"target": target}, device)

    autoregressive_generate(target, prompts[0], new_tokens)  # warm-up
    for draft in drafts.values():
        speculative_generate(target, draft, prompts[0], new_tokens, k=run_ks[0])

    # blocks (pass, prompt, draft): the draft's speculative runs, bracketed by autoregressive runs
    # (each shared with the next block); costs are divided by the mean t_target of the two brackets
    blocks = [(r, ids, name) for r in range(repeats) for ids in prompts for name in drafts]
    ars = [_ar_block(ar_timer, target, blocks[0][1], new_tokens)]
    bar.update()
    stats = {name: {"x": [], "y": [], "blocks": []} for name in drafts}
    for i, (_, ids, name) in enumerate(blocks):
        runs = {}
        for k in run_ks:
            runs[k] = _spec_run(timer[name], target, drafts[name], ids, new_tokens, k)
            bar.update()
        ars.append(_ar_block(ar_timer, target, blocks[i + 1][1] if i + 1 < len(blocks) else ids, new_tokens))
        bar.update()
        step = (ars[i]["t_target"] + ars[i + 1]["t_target"]) / 2
        s = stats[name]
        verify: dict[int, list[float]] = {}
        for run in runs.values():
            s["x"].append(run["mean_k"])
            s["y"].append(run["loop"] / step)
            for j, times in run["verify"].items():
                verify.setdefault(j, []).extend(times)
        s["blocks"].append({
            "pre": median([run["pre"] / step for run in runs.values()]),
            "c": {k: run["t_draft"] / step for k, run in runs.items()},  # 0 for a source without forwards
            "loop": {k: run["loop"] / step for k, run in runs.items()},
            "v": {j: float(np.median(times)) / step for j, times in verify.items() if j > 0},
            "loop_ar": (ars[i]["loop_ar"] / ars[i]["t_target"] + ars[i + 1]["loop_ar"] / ars[i + 1]["t_target"]) / 2,
        })
    t_targets = [a["t_target"] for a in ars]
    loop_ar = [a["loop_ar"] / a["t_target"] for a in ars]
    t_target = median(t_targets)
    loop_ar_ratio = median(loop_ar)
    return stats, t_target, loop_ar_ratio


def forward_costs(target, drafts, ks, stats, *, context: int, rounds: int, min_run_time: float, latency_model, bar):
    """(c, v, loop) per draft and k with the forward costs from ``timing.step_latency`` (``rounds``
    rotated rounds, the median of per-round ratios to t_target cancelling drift) or, when
    ``latency_model`` is given, from its ``predict(model, context, tokens)``; the loop's outside
    time per iteration is fitted as a + b k on the runs' ``stats`` (``fit_loop``)."""
    models = {n: d for n, d in drafts.items() if isinstance(d, torch.nn.Module)}  # a source has no forward: c = 0
    jobs = [("target", target, 1)] + [(("verify", k), target, k + 1) for k in ks] + [(("draft", n), d, 1) for n, d in models.items()]
    if latency_model is None:
        per_round = []
        for r in range(rounds):
            measured = {}
            for key, model, tokens in rotated(jobs, r):
                measured[key] = step_latency(model, context=context, tokens=tokens, min_run_time=min_run_time)["median_s"]
                bar.update()
            per_round.append(measured)
    else:
        per_round = [{key: float(latency_model.predict(model, context, tokens)) for key, model, tokens in jobs}]
    ratios = {key: median([m[key] / m["target"] for m in per_round]) for key, _, _ in jobs}
    c = {name: {k: ratios[("draft", name)] if name in models else 0.0 for k in ks} for name in drafts}
    v = {name: {k: ratios[("verify", k)] for k in ks} for name in drafts}
    loop = {}
    for name in drafts:
        a, b = fit_loop(stats[name]["x"], stats[name]["y"])
        loop[name] = {k: max(a + b * k, 0.0) for k in ks}
    return c, v, loop
