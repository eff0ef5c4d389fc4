"""Checking the planner's prediction: ``validate`` measures (draft, k) pairs against target-only
decoding in interleaved, rotated runs (``timing.compare``) and sets the measured speedup beside
the plan's; ``validate_runs`` does the same from per-prompt runs measured elsewhere (e.g.
``bench.headline.headline_runs``), with the measurement's prompt-level 95% CI; ``report`` prints
the comparison. The prediction is the steady-state decode speedup, so validate with enough new
tokens (>= 32).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import torch

from ..generate import autoregressive_generate, speculative_generate
from ..generate.checks import validate as check_inputs
from ..generate.schedules import is_schedule
from ..stats import paired_speedup, pooled_alpha
from ..timing import PooledResult, compare, summarize
from .checks import check_drafts, check_new_tokens, check_plan, check_prompts
from .predict import recommend

VALIDATION_COLUMNS = [
    "method", "draft", "k", "recommended", "predicted_speedup", "predicted_lo", "predicted_hi", "measured_speedup",
    "measured_q25", "measured_q75", "error", "covered", "predicted_speedup_iid", "error_iid", "speedup_thm38",
    "error_thm38", "alpha", "measured_acceptance_rate", "predicted_tokens_per_iteration",
    "measured_tokens_per_iteration", "predicted_tokens_per_second", "measured_tokens_per_second",
    "baseline_tokens_per_second", "n_prompts", "repeats", "measured_ci_low", "measured_ci_high",
]


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
    drafts, prompts, new_tokens, chosen, schedules = _check_validation(target, drafts, plan, prompts, pairs, new_tokens,
                                                                        schedules)
    methods, meta = _methods(target, drafts, prompts, new_tokens, chosen, schedules)
    runs = compare(methods, repeats=repeats, warmup=warmup, progress=progress, device=target.device)
    table = summarize(runs, baseline="target").set_index("method")
    per_iter = runs.groupby("method")["tokens_per_iteration"].median()
    base_tps = table.loc["target", "tokens_per_second_median"]
    rows = _validation_rows(plan, meta, table, per_iter, base_tps, len(prompts))
    out = pd.DataFrame(rows, columns=VALIDATION_COLUMNS)
    return (out, runs) if return_runs else out


def _check_validation(target, drafts, plan, prompts, pairs, new_tokens, schedules):
    """``validate``'s arguments checked before anything runs: (drafts, prompts, new_tokens, the
    chosen (draft, k) pairs, schedules)."""
    drafts = check_drafts(drafts)
    check_plan(plan)
    prompts = check_prompts(prompts)
    new_tokens = check_new_tokens(plan.attrs.get("new_tokens", 32) if new_tokens is None else new_tokens)
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
            model = drafts[d] if isinstance(drafts[d], torch.nn.Module) else None  # a draft source has no model
            check_inputs(target, model, ids, new_tokens, max([k for _, k in chosen], default=1), False, 1.0)
    return drafts, prompts, new_tokens, chosen, schedules


def _methods(target, drafts, prompts, new_tokens, chosen, schedules):
    """The methods ``timing.compare`` runs (target-only first, then one per pair and per
    schedule, each decoding every prompt) and per method label its (draft, k or schedule label)."""

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
    return methods, meta


def _validation_rows(plan, meta, table, per_iter, base_tps, n_prompts) -> list[dict]:
    """One ``VALIDATION_COLUMNS`` row per measured method, the plan's prediction beside it."""
    best = recommend(plan)
    lookup = {(str(r["draft"]), int(r["k"])): r for r in plan.to_dict("records")}
    rows = []
    for name, (d, k) in meta.items():
        row = lookup[(d, k)] if isinstance(k, int) else None
        measured = float(table.loc[name, "ratio_vs_target"])
        predicted = float(row["predicted_speedup"]) if row is not None else float("nan")
        get = (lambda col: float(row[col]) if row is not None and col in row else float("nan"))
        thm38, iid, lo, hi = get("speedup_thm38"), get("predicted_speedup_iid"), get("predicted_lo"), get("predicted_hi")
        rows.append({
            "method": name, "draft": d, "k": k,
            "recommended": row is not None and (d, k) == (str(best["draft"]), int(best["k"])),
            "predicted_speedup": predicted, "predicted_lo": lo, "predicted_hi": hi, "measured_speedup": measured,
            "measured_q25": float(table.loc[name, "ratio_q25"]), "measured_q75": float(table.loc[name, "ratio_q75"]),
            "error": predicted / measured - 1, "covered": bool(lo <= measured <= hi),
            "predicted_speedup_iid": iid, "error_iid": iid / measured - 1,
            "speedup_thm38": thm38, "error_thm38": thm38 / measured - 1,
            "alpha": float(row["alpha"]) if row is not None else float("nan"),
            "measured_acceptance_rate": float(table.loc[name, "acceptance_rate_median"]),
            "predicted_tokens_per_iteration": float(row["tokens_per_iteration"]) if row is not None else float("nan"),
            "measured_tokens_per_iteration": float(per_iter[name]),
            "predicted_tokens_per_second": float(row["predicted_tokens_per_second"]) if row is not None else float("nan"),
            "measured_tokens_per_second": float(table.loc[name, "tokens_per_second_median"]),
            "baseline_tokens_per_second": float(base_tps), "n_prompts": n_prompts, "repeats": int(table.loc[name, "repeats"]),
            "measured_ci_low": float(table.loc[name, "ci_low"]) if "ci_low" in table.columns else float("nan"),
            "measured_ci_high": float(table.loc[name, "ci_high"]) if "ci_high" in table.columns else float("nan"),
        })
    return rows


def validate_runs(plan: pd.DataFrame, runs: pd.DataFrame, methods: Mapping[str, tuple[str, object]], *,
                  baseline: str = "autoregressive") -> pd.DataFrame:
    """``validate``'s table from runs already measured: one row per (run, prompt, method) with
    columns run, prompt, method, decode_tokens, decode_seconds, accepted, judged and iterations
    (``bench.headline.headline_runs``). ``methods`` maps a method label of ``runs`` to (draft, k)
    of the plan, or to (draft, schedule label) for a method the plan does not predict.

    measured_speedup is ``stats.paired_speedup`` against ``baseline`` (decode tokens over decode
    seconds, pooled, as ``validate``'s), with its prompt-level 95% CI in measured_ci_low /
    measured_ci_high; measured_q25 / measured_q75 (a spread over repeats) are NaN; repeats is
    the number of runs."""
    check_plan(plan)
    missing = [c for c in ("run", "prompt", "method", "decode_tokens", "decode_seconds", "accepted", "judged", "iterations")
               if c not in runs.columns]
    if missing:
        raise ValueError(f"runs lacks columns {missing}; pass the rows of bench.headline.headline_runs")
    measured = set(runs["method"])
    absent = sorted(set(methods) - measured) + ([baseline] if baseline not in measured else [])
    if absent:
        raise ValueError(f"methods {absent} are not in runs (measured: {sorted(measured)})")
    known = {(str(d), int(k)) for d, k in zip(plan["draft"], plan["k"])}
    unpredicted = [m for m, (d, k) in methods.items() if isinstance(k, int) and (str(d), k) not in known]
    if unpredicted:
        raise ValueError(f"methods {unpredicted} name (draft, k) pairs the plan lacks; calibrate them first")
    per_method = runs.groupby("method")
    base = per_method.get_group(baseline)
    base_tps = base["decode_tokens"].sum() / base["decode_seconds"].sum()
    table, per_iter = {}, {}
    for name in methods:
        s = paired_speedup(runs, name, baseline)
        g = per_method.get_group(name)
        iters = g["iterations"].sum()
        table[name] = {"ratio_vs_target": s["speedup"], "ratio_q25": float("nan"), "ratio_q75": float("nan"),
                       "acceptance_rate_median": pooled_alpha(runs, name)["alpha"], "repeats": s["n_runs"],
                       "tokens_per_second_median": g["decode_tokens"].sum() / g["decode_seconds"].sum(),
                       "ci_low": s["ci_low"], "ci_high": s["ci_high"]}
        per_iter[name] = (g["accepted"].sum() + iters) / iters if iters else float("nan")
    frame = pd.DataFrame(table).T
    rows = _validation_rows(plan, dict(methods), frame, pd.Series(per_iter), base_tps, int(base["prompt"].nunique()))
    return pd.DataFrame(rows, columns=VALIDATION_COLUMNS)


def report(validation: pd.DataFrame, tolerance: float = 0.10) -> str:
    """One line per method: predicted speedup with its interval vs measured, the error, whether it
    is within ``tolerance`` and whether the interval covers the measurement; then the summary the
    planner is judged by (pairs within tolerance, median |error|, coverage), with the i.i.d.
    prediction and Thm 3.8 alone beside it."""
    missing = [c for c in ("method", "predicted_speedup", "measured_speedup", "error") if c not in validation.columns]
    if missing:
        raise ValueError(f"validation lacks columns {missing}; pass the DataFrame returned by planner.validate")
    has = set(validation.columns)
    lines = []
    for r in validation.to_dict("records"):
        mark = "*" if r.get("recommended", False) else " "
        if math.isnan(r["predicted_speedup"]):
            lines.append(f"{mark} {r['method']:<28} measured {r['measured_speedup']:5.2f}x (no prediction)")
            continue
        ok = "ok" if abs(r["error"]) <= tolerance else "off"
        interval = f" [{r['predicted_lo']:.2f}, {r['predicted_hi']:.2f}]" if "predicted_lo" in has else ""
        covered = (" covered" if r["covered"] else " outside") if "covered" in has else ""
        lines.append(f"{mark} {r['method']:<28} predicted {r['predicted_speedup']:5.2f}x{interval}  measured "
                     f"{r['measured_speedup']:5.2f}x  error {r['error']:+6.1%} {ok}{covered}")
    predicted = validation[validation["predicted_speedup"].notna()]
    if len(predicted):
        n = len(predicted)
        line = (f"{int((predicted['error'].abs() <= tolerance).sum())}/{n} pairs within {tolerance:.0%}, "
                f"median |error| {predicted['error'].abs().median():.1%}")
        if "covered" in has:
            line += f", intervals cover {int(predicted['covered'].sum())}/{n}"
        for col, label in (("error_iid", "i.i.d. alpha"), ("error_thm38", "Thm 3.8 alone")):
            if col in has:
                line += (f"; {label}: {int((predicted[col].abs() <= tolerance).sum())}/{n}, "
                         f"median |error| {predicted[col].abs().median():.1%}")
        lines.append(line + "; * = recommended")
    return "\n".join(lines)
