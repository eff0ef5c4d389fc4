"""One figure style for the workbook, and ``save_fig`` → figures/NAME.png and .svg (the quick
profile writes to a git-ignored folder instead), closing the figure so notebooks print no
``<Figure size ...>`` lines. ``render_trace`` colours generated text by where each token came from."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .atomic import atomic_path
from .paths import figures_dir

__all__ = ["set_style", "save_fig", "render_trace", "TRACE_COLOURS", "plot_token_frequencies", "plot_methods", "plot_op_latency", "plot_decode_sweep", "plot_step_model",
           "plot_speedup_vs_size", "plot_depth_latency", "plot_predictors", "plot_k_sweep", "plot_k_heatmap",
           "plot_speedup_ci", "plot_k_ci"]


def set_style() -> None:
    """The workbook's seaborn theme: white grid, colour-blind palette, readable labels."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def save_fig(fig, name: str, directory: str | Path | None = None) -> list[Path]:
    """Save ``fig`` as NAME.png and NAME.svg (atomically) and close it. Returns the paths."""
    if not name or any(c in name for c in "/\\.") :
        raise ValueError(f"figure name must be a plain stem like 'speedup_vs_k'; got {name!r}")
    out_dir = Path(directory) if directory is not None else figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        final = out_dir / f"{name}.{ext}"
        with atomic_path(final) as tmp:
            fig.savefig(tmp, format=ext)
        paths.append(final)
    plt.close(fig)
    return paths


#: background colour per token source of ``GenerationResult.sources``
TRACE_COLOURS = {"draft": "#b7e4c7", "correction": "#f4a6a6", "bonus": "#a9c9ff", "target": "#e0e0e0"}


def render_trace(pieces: list[str], sources: list[str]) -> str:
    """HTML of generated text, each piece on the colour of its source (accepted draft token,
    target correction after a rejection, bonus token after full acceptance), with a legend."""
    import html

    if len(pieces) != len(sources):
        raise ValueError(f"got {len(pieces)} text pieces for {len(sources)} sources; decode each new token separately")
    unknown = set(sources) - set(TRACE_COLOURS)
    if unknown:
        raise ValueError(f"unknown token sources {sorted(unknown)}; expected {sorted(TRACE_COLOURS)}")
    spans = "".join(
        f'<span style="background:{TRACE_COLOURS[s]};white-space:pre-wrap" title="{s}">{html.escape(p)}</span>'
        for p, s in zip(pieces, sources)
    )
    legend = " ".join(f'<span style="background:{c};padding:0 4px">{name}</span>' for name, c in TRACE_COLOURS.items())
    return f'<div style="font-family:monospace;line-height:1.6">{spans}</div><div style="margin-top:6px">{legend}</div>'


#: terminal marks of ``trace_text``: accepted draft tokens stay plain
TRACE_MARKS = {"draft": ("", ""), "correction": ("[", "]"), "bonus": ("{", "}"), "target": ("<", ">")}


def trace_text(pieces: list[str], sources: list[str]) -> str:
    """Generated text for a terminal: accepted draft tokens plain, the target's own tokens marked
    ([correction] after a rejection, {bonus} after full acceptance, <target> prefill or plain step),
    with a legend line."""
    if len(pieces) != len(sources):
        raise ValueError(f"got {len(pieces)} text pieces for {len(sources)} sources; decode each new token separately")
    unknown = set(sources) - set(TRACE_MARKS)
    if unknown:
        raise ValueError(f"unknown token sources {sorted(unknown)}; expected {sorted(TRACE_MARKS)}")
    text = "".join(f"{TRACE_MARKS[s][0]}{p}{TRACE_MARKS[s][1]}" for p, s in zip(pieces, sources))
    return text + "\n-- accepted draft tokens plain, [correction], {bonus}, <target step>"


def plot_token_frequencies(counts, positions=(1, 2, 3), top: int = 8, decode=None):
    """Bar charts, one per position, of the ``top`` most frequent tokens under each method
    (rows of ``specnb.measure.sampling_histograms``). ``decode`` maps a token id to a label."""
    positions = list(positions)
    fig, axes = plt.subplots(1, len(positions), figsize=(4.2 * len(positions), 3.6), squeeze=False)
    for ax, pos in zip(axes[0], positions):
        sub = counts[counts["position"] == pos]
        keep = sub[sub["method"] == "target"].nlargest(top, "frequency")["token"]
        sub = sub[sub["token"].isin(keep)].copy()
        sub["label"] = sub["token"].map(lambda t: repr(decode(t)) if decode else str(t))
        order = [repr(decode(t)) if decode else str(t) for t in keep]
        sns.barplot(data=sub, x="label", y="frequency", hue="method", order=order, ax=ax)
        ax.set(title=f"new token {pos}", xlabel="token", ylabel="frequency")
        ax.tick_params(axis="x", rotation=60)
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def plot_methods(table, metrics=("tokens_per_second_median", "ttft_seconds_median"),
                 labels=("decode tokens/s (median)", "TTFT, s (median)")):
    """Side-by-side bars of summary metrics per method (rows of ``specnb.timing.summarize``)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
    for ax, metric, label in zip(axes[0], metrics, labels):
        sns.barplot(data=table, x="method", y=metric, hue="method", legend=False, ax=ax)
        ax.set(xlabel="", ylabel=label, title=label)
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return fig


def plot_op_latency(ops, fits, *, min_r2: float = 0.5):
    """Log-log latency vs size per operator (points: ``latency.benchmark_ops``), with each fitted
    t0 + work/throughput curve (``latency.fit_fixed_cost``) and its fixed cost t0 dashed. A fit with
    r² < ``min_r2`` is not drawn as a curve (the title says so): the points alone are the evidence."""
    import numpy as np
    from matplotlib.ticker import FuncFormatter

    names = list(dict.fromkeys(ops["op"]))
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.9 * rows), squeeze=False)
    fit = fits.set_index("op")
    for ax, name in zip(axes.flat, names):
        sub = ops[ops["op"] == name].sort_values("size")
        ax.loglog(sub["size"], sub["median_s"] * 1e6, "o", ms=4, label="measured")
        f = fit.loc[name]
        if f["r2"] >= min_r2:
            curve = f["t0_s"] + sub["work"] / f["throughput"] if f["throughput"] > 0 else np.full(len(sub), f["t0_s"])
            ax.loglog(sub["size"], curve * 1e6, "-", lw=1.2, label="t0 + work/throughput")
            ax.axhline(f["t0_s"] * 1e6, ls="--", lw=0.8, color="grey", label="t0")
            title = f"{name}: r² {f['r2']:.2f}"
        else:
            title = f"{name}: r² {f['r2']:.2f}, no fit drawn"
        ax.set_title(title, fontsize=9)
        ax.set(xlabel="size n", ylabel="µs per call")
        if sub["median_s"].max() < 10 * sub["median_s"].min():  # less than a decade: a linear y axis reads better
            ax.set_yscale("linear")
        else:
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_decode_sweep(width_sweep, depth_sweep, t0_s: float):
    """1-token decode latency vs width (fixed depth) and vs depth (fixed width), with the
    operator floor n_ops x t0 (``latency.decode_sweep`` rows)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, sweep, x, label in ((axes[0], width_sweep, "width", "d_model (log)"), (axes[1], depth_sweep, "depth", "layers")):
        ax.plot(sweep[x], sweep["decode_s"] * 1e3, "o-", label="measured")
        ax.plot(sweep[x], sweep["n_ops"] * t0_s * 1e3, "s--", label="operators x t0")
        ax.set(xlabel=label, ylabel="ms per decode step", ylim=(0, None))
        if x == "width":
            ax.set_xscale("log")
    axes[0].set_title(f"width sweep at depth {int(width_sweep['depth'].iloc[0])}")
    axes[1].set_title(f"depth sweep at width {int(depth_sweep['width'].iloc[0])}")
    axes[0].legend()
    fig.tight_layout()
    return fig


def plot_step_model(check, stream, *, tolerance: float = 0.15, other: str | None = None, other_label: str | None = None):
    """Left: the stream curve BW(working set) (``latency.measure_stream_bandwidth``), with every
    checked model's footprint marked. Right: predicted vs measured latency per (model, tokens) of
    ``latency.predict_vs_measure`` (log-log), the y = x line and a +-``tolerance`` band; ``other``
    names a second model's prediction column (``predicted_s_<other>``) drawn in grey."""
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0))
    ax = axes[0]
    ax.plot(stream["working_set_bytes"] / 2**20, stream["bytes_per_s"] / 1e9, "o-")
    fps = check.drop_duplicates("name")["footprint_bytes"] / 2**20
    ax.plot(fps, [0] * len(fps), "|", ms=18, mew=2, color="C3", label="the checked models' footprints", clip_on=False)
    ax.set(xscale="log", xlabel="working set, MiB (log)", ylabel="GB/s", title="weights streamed by a 1-row matmul", ylim=(0, None))
    ax.legend(fontsize=8)
    ax = axes[1]
    lo, hi = check["measured_s"].min() * 1e3 * 0.7, check["measured_s"].max() * 1e3 * 1.4
    xs = np.geomspace(lo, hi, 50)
    ax.fill_between(xs, xs * (1 - tolerance), xs * (1 + tolerance), color="0.9", label=f"within {tolerance:.0%}")
    ax.plot(xs, xs, color="0.5", lw=0.8)
    if other is not None:
        ax.scatter(check["measured_s"] * 1e3, check[f"predicted_s_{other}"] * 1e3, marker="x", color="0.6", label=other_label or other)
    for t, g in check.groupby("tokens"):
        ax.scatter(g["measured_s"] * 1e3, g["predicted_s"] * 1e3, label=f"step model, {t} token(s)")
    ax.set(xscale="log", yscale="log", xlabel="measured ms (log)", ylabel="predicted ms (log)",
           title="every zoo shape: predicted vs measured")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_speedup_vs_size(frame, *, x: str = "params", label: str = "draft", hue: str | None = None,
                         seeds: dict | None = None, xlabel: str = "draft parameters (log)"):
    """Speedup over target greedy vs draft size (log x), one line per ``hue`` group (e.g. a ladder):
    measured at each draft's k with its 95% CI over prompts (``ci_low`` / ``ci_high``) or, failing
    those, its interquartile range (``measured_q25`` / ``measured_q75``); the planner's prediction
    and Leviathan's Thm 3.8 when present. ``seeds``: name -> (x, speedup), a seed's own points
    (grey stars, labelled), on the same x (e.g. draft / target parameters)."""
    import numpy as np

    f = frame.sort_values(x)
    fig, ax = plt.subplots(figsize=(10.5, 4.4))
    groups = list(f.groupby(hue, sort=False)) if hue else [("", f)]
    for i, (name, g) in enumerate(groups):
        color, tag = f"C{i}", (f"{name}: " if name else "")
        if {"ci_low", "ci_high"} <= set(g.columns):
            lo, hi, what = g["ci_low"], g["ci_high"], "95% CI over prompts"
        elif {"measured_q25", "measured_q75"} <= set(g.columns):
            lo, hi, what = g["measured_q25"], g["measured_q75"], "IQR"
        else:
            lo = hi = g["measured_speedup"]
            what = ""
        err = np.vstack([g["measured_speedup"] - lo, hi - g["measured_speedup"]])
        ax.errorbar(g[x], g["measured_speedup"], yerr=err, fmt="o-", color=color, capsize=3,
                    label=f"{tag}measured" + (f" ({what})" if what else ""))
        if "predicted_speedup" in g:
            ax.plot(g[x], g["predicted_speedup"], "s--", color=color, alpha=0.6, ms=4, label=f"{tag}predicted (costs measured)")
        if "speedup_thm38" in g:
            ax.plot(g[x], g["speedup_thm38"], "^:", color=color, alpha=0.4, ms=4, label=f"{tag}Leviathan Thm 3.8 (alpha, c)")
        for _, r in g.iterrows():
            ax.annotate(f"{r[label]} (k={int(r['k'])})", (r[x], r["measured_speedup"]), textcoords="offset points",
                        xytext=(4, 6), fontsize=7, color=color)
    for name, (sx, sy) in (seeds or {}).items():
        ax.plot(sx, sy, "*", color="grey", ms=10)
        ax.annotate(name, (sx, sy), textcoords="offset points", xytext=(5, -3), fontsize=7, color="dimgrey")
    if seeds:
        ax.plot([], [], "*", color="grey", ms=10, label="seed's own results")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set(xscale="log", xlabel=xlabel, ylabel="speedup over target greedy (x)", title="Speculative speedup vs draft size")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the axes: no point hidden
    fig.tight_layout()
    return fig


def plot_depth_latency(frame, slope: float, intercept: float, r2: float, *, x: str = "layers", y: str = "decode_ms",
                       seed_note: str | None = None):
    """Decode latency vs depth at equal parameters, with the least-squares line and its R²; ``seed_note``:
    the seed's own finding, written in the corner (for a seed that gives a shape but no values)."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    lo, hi = y.replace("_ms", "") + "_min_ms", y.replace("_ms", "") + "_max_ms"
    if {lo, hi} <= set(frame.columns):  # spread over timing rounds
        ax.errorbar(frame[x], frame[y], yerr=np.vstack([frame[y] - frame[lo], frame[hi] - frame[y]]), fmt="o", ms=7, capsize=3,
                    label="measured (median, range over rounds)")
    else:
        ax.plot(frame[x], frame[y], "o", ms=7, label="measured")
    xs = np.linspace(0, frame[x].max(), 50)
    ax.plot(xs, intercept + slope * xs, "--", label=f"{slope:.2f} ms/layer + {intercept:.2f} ms (R² = {r2:.3f})")
    for _, r in frame.iterrows():
        ax.annotate(str(r.get("model", "")), (r[x], r[y]), textcoords="offset points", xytext=(5, -10), fontsize=8)
    if seed_note:
        ax.text(0.98, 0.04, seed_note, transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="dimgrey")
    ax.set(xlabel="layers (parameters held ~equal)", ylabel="ms per decode step", ylim=(0, None), xlim=(0, None),
           title="Draft latency grows with depth")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_predictors(frame, predictors, outcome: str, *, hue: str | None = None, corr=None, labels: dict | None = None):
    """One scatter per predictor of ``outcome`` (e.g. acceptance rate), coloured by ``hue``, with
    Pearson/Spearman r from ``measure.correlate`` rows in each title when ``corr`` is given. A
    positive predictor spanning more than a decade (e.g. perplexity) gets a log x axis."""
    import numpy as np

    labels = labels or {}
    fig, axes = plt.subplots(1, len(predictors), figsize=(3.8 * len(predictors), 3.7), squeeze=False, sharey=True)
    for i, (ax, pred) in enumerate(zip(axes[0], predictors)):
        sns.scatterplot(data=frame, x=pred, y=outcome, hue=hue, ax=ax, s=45, legend=(i == len(predictors) - 1))
        title = labels.get(pred, pred)
        if corr is not None:
            c = corr[(corr["predictor"] == pred) & (corr["outcome"] == outcome)].set_index("method")["r"]
            title += f"\nPearson r {c.get('pearson', float('nan')):+.2f} · Spearman ρ {c.get('spearman', float('nan')):+.2f}"
        values = frame[pred].to_numpy(float)
        log = bool((values > 0).all() and values.max() > 10 * values.min())
        ax.set_title(title, fontsize=10)
        ax.set(xlabel=labels.get(pred, pred) + (" (log)" if log else ""), ylabel=labels.get(outcome, outcome))
        if log:
            ax.set_xscale("log")
    if hue is not None and axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    fig.tight_layout()
    return fig


def plot_k_sweep(frame, *, y: str = "ms_per_token", pair: str = "draft", best: str | None = None,
                 band: tuple[int, int] | None = (3, 5), band_label: str = "seed 003: K* in 3-5"):
    """Latency per token vs k, one line per pair (seed 003's BLOOM figure); the measured best k of
    each pair is ringed, and the seed's range of K* shaded."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if band is not None:
        ax.axvspan(band[0] - 0.5, band[1] + 0.5, color="C2", alpha=0.12, label=band_label)
    sns.lineplot(data=frame, x="k", y=y, hue=pair, marker="o", ax=ax, errorbar=None)
    for _, g in frame.groupby(pair):
        b = g.loc[g[y].idxmin()]
        ax.plot(b["k"], b[y], "o", ms=13, mfc="none", mec="black")
    if best is not None:
        ax.axhline(best, color="grey", ls="--", lw=0.8, label="target greedy")
    ax.set(xlabel="draft tokens per iteration k", ylabel="ms per generated token", title="Latency per token vs k")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_planner_check(check, *, tolerance: float = 0.10):
    """Predicted vs measured speedup for every (draft, k) of ``planner.validate`` / ``validate_runs``:
    the prediction with its interval (vertical bar), the measurement's prompt-level CI where it has
    one (horizontal bar), the i.i.d.-alpha prediction as a cross, y = x and the +-``tolerance``
    band; k is written beside each point."""
    import numpy as np

    rows = check[check["predicted_speedup"].notna()]
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    lo = np.nanmin([rows["measured_speedup"].min(), rows.get("measured_ci_low", rows["measured_speedup"]).min(),
                    rows["predicted_lo"].min(), rows["predicted_speedup_iid"].min()]) * 0.95
    hi = np.nanmax([rows["measured_speedup"].max(), rows.get("measured_ci_high", rows["measured_speedup"]).max(),
                    rows["predicted_hi"].max(), rows["predicted_speedup_iid"].max()]) * 1.05
    xs = np.linspace(lo, hi, 2)
    ax.fill_between(xs, xs * (1 - tolerance), xs * (1 + tolerance), color="grey", alpha=0.15, lw=0,
                    label=f"within {tolerance:.0%}")
    ax.plot(xs, xs, color="grey", lw=0.8)
    for (draft, g), color in zip(rows.groupby("draft", sort=False), sns.color_palette()):
        xerr = None
        if {"measured_ci_low", "measured_ci_high"} <= set(g.columns) and g["measured_ci_low"].notna().all():
            xerr = [g["measured_speedup"] - g["measured_ci_low"], g["measured_ci_high"] - g["measured_speedup"]]
        ax.errorbar(g["measured_speedup"], g["predicted_speedup"], fmt="o", ms=5, color=color, capsize=2, lw=1,
                    yerr=[g["predicted_speedup"] - g["predicted_lo"], g["predicted_hi"] - g["predicted_speedup"]],
                    xerr=xerr, label=draft)
        ax.plot(g["measured_speedup"], g["predicted_speedup_iid"], "x", color=color, ms=5, alpha=0.7)
        for _, r in g.iterrows():
            ax.annotate(f"k={int(r['k'])}", (r["measured_speedup"], r["predicted_speedup"]), textcoords="offset points",
                        xytext=(4, -9), fontsize=7, color=color)
    ax.plot([], [], "x", color="black", label="i.i.d. alpha (Leviathan Eq. 1)")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured speedup, held-out prompts (bar: 95% CI)",
           ylabel="predicted speedup (bar: 90% prediction interval)", title="The planner: predicted vs measured, every (draft, k)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def plot_k_heatmap(grid, points=None):
    """Predicted K* over (alpha, c) (``planner.optimal_k_grid`` rows: alpha, c, k_star, pays; 0 where
    no k pays), with the measured pairs (``points``: alpha, c, label) placed on it."""
    import numpy as np

    g = grid.assign(k_plot=grid["k_star"].where(grid["pays"], 0))
    table = g.pivot(index="c", columns="alpha", values="k_plot").sort_index(ascending=False)
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    alphas, cs = table.columns.to_numpy(float), table.index.to_numpy(float)
    ax.grid(False)
    mesh = ax.imshow(table.to_numpy(float), aspect="auto", cmap=plt.get_cmap("viridis", 8), vmin=-0.5, vmax=7.5,
                     extent=(alphas.min(), alphas.max(), cs.min(), cs.max()))
    fig.colorbar(mesh, ax=ax, label="optimal k")
    if points is not None:
        for _, r in points.iterrows():
            ax.plot(r["alpha"], r["c"], "o", mfc="white", mec="black", ms=7)
            ax.annotate(str(r["label"]), (r["alpha"], r["c"]), textcoords="offset points", xytext=(5, 4), fontsize=8, color="white")
    ax.set(xlabel="acceptance rate alpha", ylabel="cost ratio c = t_draft / t_target",
           title="Predicted best k (0 = do not speculate)", ylim=(cs.min(), cs.max()))
    ax.set_xticks(np.arange(np.ceil(alphas.min() * 10) / 10, alphas.max() + 1e-9, 0.1))
    ax.xaxis.set_major_formatter("{x:.1f}")
    fig.tight_layout()
    return fig


def plot_speedup_ci(table, *, label: str = "method", title: str = "Speedup with 95% CI over prompts",
                    marks: dict | None = None, xlabel: str = "speedup of decode tokens/s"):
    """One row per ``label``: the speedup and its prompt-level CI (columns speedup, ci_low,
    ci_high), a line at 1 (no gain); ``marks``: name -> value drawn as labelled vertical lines
    (e.g. a seed's number or an issue's goal)."""
    t = table.sort_values("speedup")
    fig, ax = plt.subplots(figsize=(6.8, 0.45 * len(t) + 1.4))
    y = range(len(t))
    ax.errorbar(t["speedup"], y, xerr=[t["speedup"] - t["ci_low"], t["ci_high"] - t["speedup"]], fmt="o", color="C0",
                ecolor="C0", capsize=3)
    ax.set_yticks(list(y), list(t[label]))
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    for i, (name, value) in enumerate((marks or {}).items()):  # labelled inside the axes, whatever the rows
        ax.axvline(value, color=f"C{i + 1}", lw=1.2, ls=":")
        ax.text(value, 0.97, name, transform=ax.get_xaxis_transform(), rotation=90, va="top", ha="right", fontsize=8,
                color=f"C{i + 1}")
    ax.set(xlabel=xlabel, title=title)
    fig.tight_layout()
    return fig


def plot_k_ci(table, *, band: tuple[int, int] | None = (3, 5), band_label: str = "seed 003: K* in 3-5",
              title: str = "Speedup vs k, 95% CI over prompts"):
    """Speedup (columns k, speedup, ci_low, ci_high) against k with its CI as a band, and the
    seed's range of K* shaded."""
    t = table.sort_values("k")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if band is not None:
        ax.axvspan(band[0] - 0.5, band[1] + 0.5, color="C2", alpha=0.15, label=band_label)
    ax.fill_between(t["k"], t["ci_low"], t["ci_high"], color="C0", alpha=0.25, label="95% CI")
    ax.plot(t["k"], t["speedup"], "o-", color="C0", label="measured")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="draft tokens per iteration k", ylabel="speedup over autoregressive", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
