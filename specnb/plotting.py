"""One figure style for the workbook, and ``save_fig`` → figures/NAME.png and .svg (the quick
profile writes to a git-ignored folder instead), closing the figure so notebooks print no
``<Figure size ...>`` lines. ``render_trace`` colours generated text by where each token came from."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .paths import figures_dir

__all__ = ["set_style", "save_fig", "render_trace", "TRACE_COLOURS", "plot_token_frequencies", "plot_methods"]


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
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=f".{ext}")
        os.close(fd)
        try:
            fig.savefig(tmp, format=ext)
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
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
