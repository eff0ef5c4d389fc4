"""Notebook 06's figures, each from a result frame of ``experiments``; seeds' numbers drawn beside ours.

- ``plot_quality``: test MSE per horizon and model, with bootstrap CIs over windows.
- ``plot_scaling``: seed 000's per-batch component breakdown (the unattributed rest labelled
  "other", so the bars sum to the measured total) and the forward speedup beside the seed's.
- ``plot_speculative``: paired speedup and MSE ratio vs target-only per horizon, with CIs.
- ``plot_tradeoff``: the tolerance dial: MSE ratio against speedup, and acceptance per tolerance.
- ``plot_progression``: seed 001's stages, our MSE and acceptance beside the seed's.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["plot_quality", "plot_scaling", "plot_speculative", "plot_tradeoff", "plot_progression", "COMPONENTS"]

COMPONENTS = ("attention", "mlp", "norms", "embedding", "head", "other")


def _err(frame: pd.DataFrame, est: str, low: str, high: str) -> np.ndarray:
    """Asymmetric error bars (2, n) from CI columns."""
    return np.vstack([frame[est] - frame[low], frame[high] - frame[est]]).clip(min=0)


def _log_horizons(ax, horizons) -> None:
    ax.set_xscale("log")
    hs = sorted(set(horizons))
    ax.set_xticks(hs, labels=[str(h) for h in hs])
    ax.minorticks_off()


def plot_quality(table: pd.DataFrame, reference: str = "target", ratio_max: float = 1.2):
    """Left: test MSE vs horizon, one line per model, 95% CI over windows; ``reference`` bold.
    Right: each model's MSE over the reference's on the same windows (paired CI); models whose
    ratio exceeds ``ratio_max`` are left off that panel and named in its title."""
    fig, ax = plt.subplots(1, 2, figsize=(14, 4.4))
    models = list(table["model"].unique())
    for i, model in enumerate(models):
        g = table[table["model"] == model]
        bold = model == reference
        style = dict(marker="o", capsize=2, lw=2.5 if bold else 1, color="black" if bold else f"C{i % 10}", label=model,
                     zorder=3 if bold else 2)
        shift = g["horizon"] * (1 + 0.012 * (i - len(models) / 2))
        ax[0].errorbar(shift, g["mse"], yerr=_err(g, "mse", "mse_low", "mse_high"), **style)
        if not bold and g["mse_vs_target"].max() <= ratio_max:
            ax[1].errorbar(shift, g["mse_vs_target"], yerr=_err(g, "mse_vs_target", "ratio_low", "ratio_high"), **style)
    off = [m for m in models if m != reference and table.loc[table["model"] == m, "mse_vs_target"].max() > ratio_max]
    ax[1].axhline(1, color="black", lw=2, label=f"{reference} (= 1)")
    for a in ax:
        _log_horizons(a, table["horizon"])
        a.set_xlabel("horizon (hours, log)")
    ax[0].set(ylabel="test MSE (scaled data)", title="Each model alone: test MSE, 95% CI over windows")
    ax[1].set(ylabel=f"MSE / {reference} MSE (same windows)",
              title=f"Relative to the {reference}: above 1 is worse" + (f" ({', '.join(off)} off scale)" if off else ""))
    ax[1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def plot_scaling(scaling: pd.DataFrame, seed: Mapping[str, float]):
    """Left: per-batch ms per component (stacked, summing to the measured total). Right: the
    forward speedup vs the target, ours beside seed 000's (``seed``: model -> speedup)."""
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.2))
    comp = scaling.set_index("model")[[f"{c}_ms" for c in COMPONENTS]].rename(columns=lambda c: c[:-3])
    comp.plot.barh(stacked=True, ax=ax[0])
    ax[0].plot(scaling["total_ms"], range(len(scaling)), "k|", ms=14, mew=2, label="measured total")
    ax[0].set(xlabel=f"ms per batch of {int(scaling['batch_series'].iloc[0])} series", ylabel="",
              title="Per-batch time by component (other = total - components)")
    ax[0].legend(fontsize=8, bbox_to_anchor=(0.5, -0.18), loc="upper center", ncol=4)
    x = np.arange(len(scaling))
    ax[1].bar(x - 0.2, scaling["total_speedup"], 0.4, label="ours (CPU)")
    ax[1].bar(x + 0.2, [seed.get(m, np.nan) for m in scaling["model"]], 0.4, label="seed 000 (GPU)")
    ax[1].axhline(1, color="grey", ls="--", lw=1)
    ax[1].set_yscale("log")
    ax[1].set_xticks(x, scaling["model"], rotation=20)
    ax[1].set(ylabel="forward speedup vs target (x, log)", title="Per-batch forward speedup")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_speculative(table: pd.DataFrame):
    """One speed panel per batch regime (paired speedup vs target-only, 95% CI over batches) and
    one quality panel (MSE ratio vs target-only on the test windows, paired CI), per horizon and
    method (``speculative_table`` rows with a ``regime`` column; quality from rows that have it)."""
    regimes = list(table["regime"].unique())
    fig, axes = plt.subplots(1, len(regimes) + 1, figsize=(6 * (len(regimes) + 1), 4.2))
    spec = table[table["method"] != "target-only"]
    methods = list(spec["method"].unique())
    for ax, regime in zip(axes, regimes):
        for i, m in enumerate(methods):
            g = spec[(spec["regime"] == regime) & (spec["method"] == m)]
            shift = g["horizon"] * (1 + 0.02 * (i - (len(methods) - 1) / 2))
            ax.errorbar(shift, g["speedup"], yerr=_err(g, "speedup", "ci_low", "ci_high"), marker="o", capsize=2, label=m, color=f"C{i}")
        ax.axhline(1, color="grey", ls="--", lw=1)
        ax.set(ylabel="speedup vs target-only (x)", title=f"Speed, {regime}")
    q = spec.dropna(subset=["mse_ratio"])
    for i, m in enumerate(methods):
        g = q[q["method"] == m].drop_duplicates("horizon")
        shift = g["horizon"] * (1 + 0.02 * (i - (len(methods) - 1) / 2))
        axes[-1].errorbar(shift, g["mse_ratio"], yerr=_err(g, "mse_ratio", "mse_ratio_low", "mse_ratio_high"), marker="o", capsize=2,
                          label=m, color=f"C{i}")
    axes[-1].axhline(1, color="grey", ls="--", lw=1)
    axes[-1].axhspan(1, 1.02, color="tab:green", alpha=0.12, label="within 2% of target-only")
    axes[-1].set(ylabel="MSE / target-only MSE (test windows)", title="Quality (same in both regimes)")
    axes[-1].legend(fontsize=8)
    for ax in axes:
        _log_horizons(ax, table["horizon"])
        ax.set_xlabel("horizon (hours, log)")
    fig.tight_layout()
    return fig


def plot_tradeoff(table: pd.DataFrame, title: str):
    """The tolerance dial on a categorical axis (0 ... inf): speedup vs target-only, MSE ratio vs
    target-only (both with 95% CIs) and acceptance, one panel each."""
    t = table[table["method"] != "target-only"].sort_values("tol").reset_index(drop=True)
    x = np.arange(len(t))
    labels = ["∞" if np.isinf(v) else f"{v:g}" for v in t["tol"]]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].errorbar(x, t["speedup"], yerr=_err(t, "speedup", "ci_low", "ci_high"), marker="o", capsize=3)
    ax[0].axhline(1, color="grey", ls="--", lw=1)
    ax[0].set(ylabel="speedup vs target-only (x)", title=f"Speed ({title})")
    ax[1].errorbar(x, t["mse_ratio"], yerr=_err(t, "mse_ratio", "mse_ratio_low", "mse_ratio_high"), marker="o", capsize=3, color="tab:red")
    ax[1].axhline(1, color="grey", ls="--", lw=1)
    ax[1].axhline(1.02, color="tab:green", ls=":", lw=1, label="MSE +2%")
    ax[1].set(ylabel="MSE / target-only MSE", title="Quality")
    ax[1].legend(fontsize=8)
    ax[2].plot(x, t["acceptance"], marker="o", color="tab:green")
    ax[2].set(ylabel="accepted draft patches (fraction)", ylim=(0, 1.05), title="Acceptance")
    for a in ax:
        a.set_xticks(x, labels)
        a.set_xlabel("tolerance (MSE in context-variance units)")
    fig.tight_layout()
    return fig


def plot_progression(table: pd.DataFrame, rules: Mapping[str, str]):
    """Seed 001's stages: left, MSE alone (H = 96) ours with CI beside the seed's; right,
    acceptance per rule (``rules``: column suffix -> label) beside the seed's."""
    p = table[table["stage"] != "target"].reset_index(drop=True)
    target = table[table["stage"] == "target"].iloc[0]
    names = [st.replace(" (", "\n(") for st in p["stage"]]
    x = np.arange(len(p))
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.4))
    ax[0].bar(x - 0.2, p["mse"], 0.4, yerr=_err(p, "mse", "mse_low", "mse_high"), capsize=3, label="ours (H=96)")
    ax[0].bar(x + 0.2, p["seed_mse"], 0.4, label="seed 001")
    ax[0].axhline(target["mse"], color="black", ls="--", lw=1, label="our target")
    ax[0].axhline(target["seed_mse"], color="tab:orange", ls=":", lw=1, label="seed 001's target")
    ax[0].set_xticks(x, names, fontsize=8)
    ax[0].set(ylabel="test MSE (scaled data)", title="Each stage alone as a forecaster", ylim=(0, max(p["seed_mse"].max(), target["seed_mse"]) * 1.35))
    ax[0].legend(fontsize=8, loc="upper center", ncol=2)
    width = 0.8 / (len(rules) + 1)
    for i, (col, label) in enumerate(rules.items()):
        ax[1].bar(x + (i - len(rules) / 2) * width, p[f"acceptance_{col}"], width, label=label)
    ax[1].bar(x + (len(rules) / 2) * width, p["seed_acceptance"], width, label="seed 001")
    ax[1].set_xticks(x, names, fontsize=8)
    ax[1].set(ylabel="accepted draft patches (fraction)", ylim=(0, 1.3), yticks=np.linspace(0, 1, 6), title="Acceptance along the progression")
    ax[1].legend(fontsize=8, loc="upper center", ncol=3)
    fig.tight_layout()
    return fig
