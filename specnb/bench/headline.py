"""Headline measurements of notebooks 00-05 and the verdict rows built from them.

A headline number is a paired ratio of two decoders on the same held-out prompts, measured
interleaved in one run, repeated over independent runs, with a 95% CI that resamples prompts
(``stats.paired_speedup``). A verdict row carries that CI, its n of prompts and runs, the
between-run range and the distinct-4 ratio of the target's own output, so that a reader sees
when a ratio was measured on looping text.

- ``pair_methods(target, pairs, max_new_tokens)``: name -> decoder: "autoregressive" and one
  speculative decoder per label -> (draft, k); sampled decoders (``do_sample``, Leviathan's rule
  at ``temperature``) each draw from their own generator, seeded by name.
- ``headline_runs(target, pairs, prompts, runs, max_new_tokens)``: those decoders in
  ``peers.interleaved_runs`` (identity against autoregressive; meaningful under greedy only).
- ``claim_row(claim, seed, stat, threshold)``: one verdict row from a ``paired_speedup`` dict (or
  any estimate with ``ci_low`` / ``ci_high``) against a threshold or a band (lo, hi); ``verdict``
  is "held", "not held" or "inconclusive" (``stats.verdict``, ``band_verdict``), and ``caveat``
  names degenerate text (distinct-4 < 0.5).
- ``prediction_stat(predicted, measured)``: predicted / measured, with the measurement's CI.
- ``fit_line(x, y)``: least-squares slope with its 95% CI (Student t on the slope's standard
  error, scipy ``linregress``), intercept, r² and n.
- ``round_ratio(per_round, numerator, denominator)``: one model's step time over another's from
  ``timing.step_latencies(per_round=True)``: the median per-round ratio, CI over timing rounds.
- ``share_stat(hits, n)`` / ``median_stat(values)``: a proportion with its Clopper-Pearson 95% CI,
  a median with its percentile-bootstrap CI (e.g. the planner's pairs within 10%, its median error).
- ``k_star_row(claim, seed, table, band)``: the K* of a k sweep as the set of k whose CI overlaps the
  best's (``stats.k_star_set``): "held" when the set lies inside the seed's band, "not held" when
  it misses it, "inconclusive" when it straddles.
- ``implementation_table(runs, methods, baseline)``: SpS vs AsG (or any two implementations) on
  the same pairs, from one run: each implementation's speedup over ``baseline`` and their ratio,
  each with its prompt-level CI.
- ``verdict_frame(rows)``: the rows as a table, in the column order every notebook shows.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..generate import autoregressive_generate, speculative_generate
from ..stats import bootstrap_ci, k_star_set, paired_speedup, pooled_alpha, verdict
from .peers import Decoder, interleaved_runs

__all__ = ["pair_methods", "headline_runs", "claim_row", "band_verdict", "prediction_stat", "round_ratio", "fit_line", "share_stat", "median_stat",
           "k_star_row", "implementation_table", "verdict_frame", "LOOP_DISTINCT4", "VERDICT_COLUMNS"]

#: below this distinct-4 ratio the target's text is a loop, and an alpha on it says little
LOOP_DISTINCT4 = 0.5
VERDICT_COLUMNS = ["claim", "seed", "ours", "95% CI", "n", "runs range", "target distinct-4", "verdict", "caveat"]


def pair_methods(target, pairs: Mapping[str, tuple[object, int]], *, max_new_tokens: int, do_sample: bool = False,
                 temperature: float = 1.0, seed: int = 0, verify: str = "parallel",
                 eos_token_id=None) -> dict[str, Decoder]:
    """"autoregressive" plus one speculative decoder per ``label -> (draft, k)``."""
    if not pairs:
        raise ValueError("pair_methods needs at least one label -> (draft, k) pair")
    for label, pair in pairs.items():
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], int) and pair[1] >= 1):
            raise ValueError(f"pair {label!r} must be (draft, k) with an int k >= 1; got {pair!r}")
    gens: dict[str, torch.Generator] = {}

    def g(name: str):  # one generator per method, seeded by its name: the rotation changes no method's draws
        if not do_sample:
            return None
        return gens.setdefault(name, torch.Generator(device=target.device).manual_seed(seed * 1_000_003 + zlib.crc32(name.encode())))

    common = dict(do_sample=do_sample, temperature=temperature, eos_token_id=eos_token_id)
    methods: dict[str, Decoder] = {"autoregressive": lambda p: autoregressive_generate(target, p, max_new_tokens, generator=g("ar"), **common)}
    for label, (draft, k) in pairs.items():
        methods[label] = lambda p, d=draft, k=k, n=label: speculative_generate(target, d, p, max_new_tokens, k=k, verify=verify,
                                                                               generator=g(n), **common)
    return methods


def headline_runs(target, pairs: Mapping[str, tuple[object, int]], prompts: Sequence[torch.Tensor], *, runs: int,
                  max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0, seed: int = 0,
                  label: str = "headline", progress: bool = True, **decoders: Decoder) -> pd.DataFrame:
    """Every decoder of ``pair_methods`` (plus any named ``decoders``) on every prompt, ``runs``
    times, interleaved: one row per (run, prompt, method), plus ``sampled`` and ``temperature``."""
    methods = pair_methods(target, pairs, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, seed=seed)
    clash = set(methods) & set(decoders)
    if clash:
        raise ValueError(f"decoder names {sorted(clash)} are already pair labels; rename them")
    frame = interleaved_runs({**methods, **decoders}, prompts, runs=runs, reference="autoregressive", label=label, progress=progress)
    return frame.assign(sampled=do_sample, temperature=temperature if do_sample else 0.0)


def implementation_table(runs: pd.DataFrame, methods: Mapping[str, tuple[int, str, str]], *,
                         baseline: str = "autoregressive", names: tuple[str, str] = ("SpS", "AsG")) -> pd.DataFrame:
    """Two implementations of the same (draft, k), measured in one run: ``methods`` maps a draft
    name to (k, method label of the first, method label of the second). Long format, one row per
    (draft, implementation): each one's speedup over ``baseline`` and, as implementation
    "A / B", the first over the second (``stats.paired_speedup``, CI over prompts), with alpha."""
    rows = []
    for draft, (k, first, second) in methods.items():
        for impl, method, base in ((names[0], first, baseline), (names[1], second, baseline),
                                   (f"{names[0]} / {names[1]}", first, second)):
            s = paired_speedup(runs, method, base)
            alpha = pooled_alpha(runs, method)["alpha"] if base == baseline else float("nan")
            rows.append({"draft": draft, "implementation": impl, "k": k, "method": method, "baseline": base,
                         **{c: s[c] for c in ("speedup", "ci_low", "ci_high", "n_prompts", "n_runs", "run_min", "run_max")},
                         "acceptance_rate": alpha})
    return pd.DataFrame(rows)


def _caveat(distinct4: float) -> str:
    """The loop warning of a verdict row ("" when the text is language or unmeasured)."""
    if math.isnan(distinct4) or distinct4 >= LOOP_DISTINCT4:
        return ""
    return f"the target's text loops (distinct-4 {distinct4:.2f} < {LOOP_DISTINCT4})"


def _fmt(value: float, unit: str, digits: int) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}{unit}"


def band_verdict(low: float, high: float, band: tuple[float, float]) -> str:
    """"held" if the CI [low, high] lies inside ``band``, "not held" if it lies wholly outside,
    "inconclusive" if it overlaps an edge (or is nan)."""
    lo, hi = band
    if not lo < hi:
        raise ValueError(f"band must be (low, high) with low < high; got {band}")
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if lo <= low and high <= hi:
        return "held"
    if high < lo or low > hi:
        return "not held"
    return "inconclusive"


def prediction_stat(predicted: float, measured: Mapping, *, value: str = "speedup") -> dict:
    """``predicted / measured[value]`` as an estimate whose CI is the measurement's, inverted
    ([predicted / ci_high, predicted / ci_low]); n and the between-run range carry over."""
    if not predicted > 0 or not float(measured[value]) > 0:
        raise ValueError(f"prediction_stat needs positive values; got predicted {predicted}, measured {measured[value]}")
    out = {"ratio": predicted / float(measured[value]), "ci_low": predicted / float(measured["ci_high"]),
           "ci_high": predicted / float(measured["ci_low"])}
    for key in ("n_prompts", "n_runs"):
        if key in measured:
            out[key] = measured[key]
    if "run_min" in measured and "run_max" in measured:
        out["run_min"], out["run_max"] = predicted / float(measured["run_max"]), predicted / float(measured["run_min"])
    return out


def fit_line(x: Sequence[float], y: Sequence[float], *, confidence: float = 0.95) -> dict:
    """Least-squares line y = slope * x + intercept with the slope's CI (t with n - 2 degrees of
    freedom times its standard error), r² and n; keys ``slope``, ``ci_low``, ``ci_high`` suit ``claim_row``."""
    from scipy import stats as _st

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 3 or np.ptp(x) == 0:
        raise ValueError(f"fit_line needs >= 3 paired points over more than one x; got {len(x)} x, {len(y)} y")
    fit = _st.linregress(x, y)
    half = _st.t.ppf(0.5 + confidence / 2, len(x) - 2) * fit.stderr
    return {"slope": fit.slope, "ci_low": fit.slope - half, "ci_high": fit.slope + half, "intercept": fit.intercept,
            "r2": fit.rvalue ** 2, "n": len(x)}


def round_ratio(per_round: pd.DataFrame, numerator: str, denominator: str, *, seed: int = 0) -> dict:
    """Step time of ``numerator`` over ``denominator`` within each timing round (rows of
    ``step_latencies(..., per_round=True)``): the median ratio and a percentile-bootstrap 95% CI
    over rounds, with ``n_rounds``."""
    piv = per_round.pivot_table(index="round", columns="model", values="median_s")
    for name in (numerator, denominator):
        if name not in piv:
            raise ValueError(f"{name!r} was not timed; the rounds hold {sorted(piv.columns)}")
    ratio = (piv[numerator] / piv[denominator]).dropna().to_numpy()
    est, low, high = bootstrap_ci([ratio], np.median, method="percentile", seed=seed)
    return {"ratio": est, "ci_low": low, "ci_high": high, "n_rounds": len(ratio)}


def claim_row(claim: str, seed: str, stat: Mapping, threshold: float | tuple[float, float], *, higher_is_claim: bool = True, value: str = "speedup",
              what: str = "", unit: str = "x", digits: int = 2, distinct4: float = float("nan"), n: str | None = None) -> dict:
    """One verdict row: ``stat[value]`` with its CI (``ci_low``, ``ci_high``) against ``threshold``
    (the claim is value >= threshold, or <= with ``higher_is_claim=False``) or a band (lo, hi).

    ``n`` defaults to "P prompts x R runs" from ``n_prompts`` / ``n_runs``; the runs range is
    ``run_min``-``run_max`` when present. ``distinct4`` is the target's output's distinct-4 ratio
    on the prompts measured; below ``LOOP_DISTINCT4`` the caveat says the text loops.
    """
    for key in (value, "ci_low", "ci_high"):
        if key not in stat:
            raise ValueError(f"claim_row needs {key!r} in stat; got {sorted(stat)}")
    est, low, high = float(stat[value]), float(stat["ci_low"]), float(stat["ci_high"])
    if n is None:
        n = f"{int(stat['n_prompts'])} prompts x {int(stat['n_runs'])} runs" if "n_prompts" in stat and "n_runs" in stat else "—"
    runs_range = (f"{_fmt(float(stat['run_min']), unit, digits)}–{_fmt(float(stat['run_max']), unit, digits)}"
                  if "run_min" in stat and "run_max" in stat and int(stat.get("n_runs", 2)) > 1 else "—")
    if isinstance(threshold, tuple):
        judged = band_verdict(low, high, threshold)
    else:
        judged = verdict(low, high, threshold, higher_is_claim=higher_is_claim)
    caveat = _caveat(distinct4)
    return {"claim": claim, "seed": seed, "ours": (f"{what}: " if what else "") + _fmt(est, unit, digits),
            "95% CI": f"[{_fmt(low, unit, digits)}, {_fmt(high, unit, digits)}]", "n": n, "runs range": runs_range,
            "target distinct-4": _fmt(distinct4, "", 2), "verdict": judged, "caveat": caveat, "estimate": est, "ci_low": low,
            "ci_high": high, "threshold": str(threshold)}


def share_stat(hits: int, n: int, *, confidence: float = 0.95) -> dict:
    """hits / n with its exact (Clopper-Pearson) CI, from ``scipy.stats.binomtest``."""
    from scipy.stats import binomtest

    if not 0 <= hits <= n or n < 1:
        raise ValueError(f"share_stat needs 0 <= hits <= n and n >= 1; got {hits} of {n}")
    ci = binomtest(int(hits), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return {"share": hits / n, "ci_low": float(ci.low), "ci_high": float(ci.high), "hits": int(hits), "n": int(n)}


def median_stat(values: Sequence[float], *, seed: int = 0) -> dict:
    """The median of ``values`` with a percentile-bootstrap 95% CI (values resampled)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    est, low, high = bootstrap_ci([v], np.median, method="percentile", seed=seed)
    return {"median": est, "ci_low": low, "ci_high": high, "n": len(v)}


def k_star_row(claim: str, seed: str, table: pd.DataFrame, band: tuple[int, int], *, distinct4: float = float("nan"),
               n: str | None = None) -> dict:
    """One verdict row for "the best k lies in ``band``" from a k sweep (columns k, speedup, ci_low,
    ci_high, and n_prompts / n_runs): the K* set is every k whose CI overlaps the best k's."""
    ks = k_star_set(table)
    inside = {k for k in ks if band[0] <= k <= band[1]}
    judged = "held" if len(inside) == len(ks) else "not held" if not inside else "inconclusive"
    best = table.loc[table["speedup"].idxmax()]
    if n is None and {"n_prompts", "n_runs"} <= set(table.columns):
        n = f"{int(best['n_prompts'])} prompts x {int(best['n_runs'])} runs"
    caveat = _caveat(distinct4)
    return {"claim": claim, "seed": seed, "ours": f"K* set {{{', '.join(map(str, ks))}}} (best k={int(best['k'])}, {best['speedup']:.2f}x)",
            "95% CI": f"[{best['ci_low']:.2f}x, {best['ci_high']:.2f}x] at k={int(best['k'])}", "n": n or "—", "runs range": "—",
            "target distinct-4": _fmt(distinct4, "", 2), "verdict": judged, "caveat": caveat, "estimate": float(best["k"]),
            "ci_low": float(min(ks)), "ci_high": float(max(ks)), "threshold": str(band)}


def verdict_frame(rows: Sequence[dict], *, numbers: bool = False) -> pd.DataFrame:
    """The verdict rows as a table (``numbers``: keep estimate, CI bounds and threshold as floats, for CSV)."""
    frame = pd.DataFrame(list(rows))
    missing = [c for c in VERDICT_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"verdict rows lack {missing}; build them with claim_row")
    return frame if numbers else frame[VERDICT_COLUMNS]
