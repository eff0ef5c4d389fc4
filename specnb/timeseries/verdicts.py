"""Notebook 06's verdicts, built from its result frames so that no number is typed into prose.

Each row: the claim, whose it is (seed 000, seed 001, or this workbook's own precondition), the
seed's numbers, ours with its interval and sample size, and a verdict from
``specnb.stats.verdict``: "held" / "not held" only when the interval clears the line, else
"inconclusive". A claim made of several parts is held when every part is, not held when any is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import verdict

__all__ = ["combine", "iqr_ratio", "paying_settings", "verdict_table"]


def combine(parts: list[str]) -> str:
    """One verdict from several: "not held" if any part is, "held" if all are, else "inconclusive"."""
    if "not held" in parts:
        return "not held"
    return "held" if parts and all(p == "held" for p in parts) else "inconclusive"


def iqr_ratio(base_ms: float, base_iqr: float, ms: float, iqr: float) -> tuple[float, float, float]:
    """base / ms with the range spanned by each median +- half its IQR (timing spread, not a CI)."""
    low = (base_ms - base_iqr / 2) / (ms + iqr / 2)
    high = (base_ms + base_iqr / 2) / max(ms - iqr / 2, 1e-12)
    return base_ms / ms, low, high


def paying_settings(table: pd.DataFrame, mse_slack: float = 0.02) -> pd.DataFrame:
    """The rows of a ``speculative_table`` (or several, concatenated) that pay: speedup CI above 1
    and MSE within ``mse_slack`` of target-only (point estimate), fastest first."""
    t = table[(table["method"] != "target-only") & (table["ci_low"] > 1) & (table["mse_ratio"] <= 1 + mse_slack)]
    return t.sort_values("speedup", ascending=False).reset_index(drop=True)


def _fmt(est: float, low: float, high: float, unit: str = "x") -> str:
    return f"{est:.2f}{unit} [{low:.2f}, {high:.2f}]"


def verdict_table(*, scaling: pd.DataFrame, scaling_names: dict, seed000: dict, throughput: pd.DataFrame,
                  latency: pd.DataFrame, tradeoff: pd.DataFrame, progression: pd.DataFrame, quality: pd.DataFrame,
                  seed_draft: str, stages: tuple[str, str], rule: str, mse_slack: float = 0.02) -> pd.DataFrame:
    """The verdict rows of notebook 06.

    - ``scaling`` (``scaling_table``), ``scaling_names``: role ("0.5x", "0.25x", "0.01x", "target")
      -> model name; ``seed000``: role -> seed 000's speedup.
    - ``throughput`` / ``latency``: ``speculative_table`` at seed 000's batch and at one window;
      ``seed_draft``: the method name of seed 001's fine-tuned draft there.
    - ``tradeoff``: the tolerance dial (``speculative_table`` with a ``tol`` column).
    - ``progression``: ``progression_table``; ``stages``: (ETTh1-only 0.7x, fine-tuned 0.7x) stage
      names; ``rule``: the acceptance column suffix of seed 001's rule.
    - ``quality``: ``quality_table`` (every model alone, ``mse_vs_target`` with CIs).
    """
    rows = []
    # seed 000: per-batch forward speedups of width-scaled drafts
    s = scaling.set_index("model")
    base = s.loc[scaling_names["target"]]
    parts, ours = [], []
    for role, threshold, higher in (("0.5x", 2.0, True), ("0.25x", 2.0, True), ("0.01x", 1.5, False)):
        m = s.loc[scaling_names[role]]
        est, low, high = iqr_ratio(base["total_ms"], base["total_iqr_ms"], m["total_ms"], m["total_iqr_ms"])
        parts.append(verdict(low, high, threshold, higher_is_claim=higher))
        ours.append(f"{role} {_fmt(est, low, high)}")
    rows.append({"source": "seed 000", "claim": "0.5x and 0.25x drafts > 2x faster per batch; 0.01x < 1.5x (fixed overhead)",
                 "seed": ", ".join(f"{r} {seed000[r]:.2f}x" for r in ("0.5x", "0.25x", "0.01x")), "ours": "; ".join(ours),
                 "n": f"batch of {int(base['batch_series'])} series, IQR range", "verdict": combine(parts)})
    # seed 001: high acceptance, yet slower than target-only, at the seed's batch
    t = throughput.set_index(["horizon", "method"]).loc[(throughput["horizon"].max(), seed_draft)]
    rows.append({"source": "seed 001", "claim": "high acceptance, yet speculative is slower than target-only (batch of 32 windows)",
                 "seed": "85% accepted; 0.117 s vs 0.024 s per batch",
                 "ours": f"{t['acceptance']:.0%} accepted; {_fmt(t['speedup'], t['ci_low'], t['ci_high'])} (H={throughput['horizon'].max()})",
                 "n": f"{int(t['n_batches'])} batches x {int(t['n_runs'])} runs",
                 "verdict": "not held" if not t["acceptance"] > 0.5 else verdict(t["ci_low"], t["ci_high"], 1.0, higher_is_claim=False)})
    # seed 001: pre-training + fine-tuning lifts acceptance over the ETTh1-only 0.7x
    p = progression.set_index("stage")
    plain, tuned = p.loc[stages[0]], p.loc[stages[1]]
    col = f"acceptance_{rule}"
    if tuned[f"{col}_low"] > plain[f"{col}_high"]:
        v = "held"
    elif tuned[f"{col}_high"] < plain[f"{col}_low"]:
        v = "not held"
    else:
        v = "inconclusive"
    rows.append({"source": "seed 001", "claim": "pre-training + fine-tuning lifts acceptance over an ETTh1-only 0.7x draft (seed 001's rule)",
                 "seed": "7% -> 85%",
                 "ours": f"{_fmt(plain[col], plain[col + '_low'], plain[col + '_high'], '')} -> {_fmt(tuned[col], tuned[col + '_low'], tuned[col + '_high'], '')}",
                 "n": f"{int(quality['windows'].max())} windows", "verdict": v})
    # ours: some (draft, tolerance) is faster than target-only with MSE within mse_slack of the target's
    cands = pd.concat([latency, tradeoff], ignore_index=True)
    cands = cands[(cands["method"] != "target-only") & (cands["mse_ratio"] <= 1 + mse_slack)]
    if len(cands):
        best = cands.loc[cands["speedup"].idxmax()]
        ours = (f"{best['method']} at H={int(best['horizon'])}: {_fmt(best['speedup'], best['ci_low'], best['ci_high'])}, "
                f"MSE x{best['mse_ratio']:.3f} [{best['mse_ratio_low']:.3f}, {best['mse_ratio_high']:.3f}]")
        v, n = verdict(best["ci_low"], best["ci_high"], 1.0), f"{int(best['n_batches'])} batches x {int(best['n_runs'])} runs"
    else:
        ours, v, n = f"no setting keeps the MSE within {mse_slack:.0%}", "not held", ""
    rows.append({"source": "this notebook", "claim": f"some draft and tolerance is faster than target-only with MSE within {mse_slack:.0%} (one window per call)",
                 "seed": "—", "ours": ours, "n": n, "verdict": v})
    # precondition: the target forecasts better than every draft at every horizon
    q = quality[quality["model"] != "target"]
    worse = int((q["mse_vs_target"] > 1).sum())
    parts = [verdict(r["ratio_low"], r["ratio_high"], 1.0) for _, r in q.iterrows()]
    rows.append({"source": "this notebook", "claim": "the target's test MSE is below every draft's at every horizon",
                 "seed": "—", "ours": f"{worse} of {len(q)} (draft, horizon) pairs above the target; draft/target MSE "
                                      f"{q['mse_vs_target'].min():.3f}-{q['mse_vs_target'].max():.3f}",
                 "n": f"{int(q['windows'].max())} windows", "verdict": combine(parts)})
    return pd.DataFrame(rows)
