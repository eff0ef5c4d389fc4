"""One figure style for the workbook, and ``save_fig`` → figures/NAME.png and .svg (the quick
profile writes to a git-ignored folder instead), closing the figure so notebooks print no
``<Figure size ...>`` lines."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .paths import figures_dir

__all__ = ["set_style", "save_fig"]


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
