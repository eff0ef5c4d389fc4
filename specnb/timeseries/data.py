"""ETTh1 / ETTh2: locate (or download) the sha256-checked CSV, the standard split, windows.

The ETT-small hourly tables (Zhou et al., "Informer", AAAI 2021; github.com/zhouhaoyi/ETDataset,
CC BY-ND 4.0) are never committed. ``locate_ett`` looks in a folder (argument, else
``$SPECNB_TS_DATA``, else ``../shared/data`` beside the checkout, else a user cache) and downloads
into the cache only when the file is nowhere local; the sha256 is verified either way.

``split_ett`` is the 12/4/4-month split of the Informer / Time-Series-Library code: train = rows
[0, 8640), val = [8640 - context, 11520), test = [11520 - context, 14400), each channel
standardised with the mean and std of the train rows only. Metrics are reported on this scaled
data, as the literature does.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_path
from ..paths import ROOT

__all__ = [
    "PATCH", "CONTEXT", "HORIZONS", "MONTH", "DATA_ENV", "SHARED_DATA", "CACHE_DIR", "ETT_FILES",
    "sha256_of", "fetch_url", "locate_ett", "load_ett", "split_ett", "make_windows",
]

# Timer-XL's ETTh1 setting (Liu et al., ICLR 2025): input_token_len and seq_len, and the four
# standard forecast horizons.
PATCH = 96  # points per patch (token)
CONTEXT = 672  # look-back window in points = 7 patches
HORIZONS = (96, 192, 336, 720)
MONTH = 30 * 24  # hourly rows per "month" in the Informer split
DATA_ENV = "SPECNB_TS_DATA"
SHARED_DATA = ROOT.parent / "shared" / "data"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "specnb" / "ett"
_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{name}.csv"
ETT_FILES = {
    "ETTh1": "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
    "ETTh2": "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
}


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_url(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` atomically (raises OSError when offline)."""
    with atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=timeout) as resp:
        tmp.write_bytes(resp.read())


def _check_sha(path: Path, name: str) -> Path:
    got, want = sha256_of(path), ETT_FILES[name]
    if got != want:
        raise ValueError(f"{path} has sha256 {got}, expected {want} for the ETDataset {name}.csv; "
                         f"replace it with the unmodified file from {_URL.format(name=name)}")
    return path


def locate_ett(name: str = "ETTh1", directory: str | Path | None = None) -> Path:
    """Path to a verified NAME.csv: from ``directory``, else ``$SPECNB_TS_DATA``, else
    ../shared/data beside the checkout, else the user cache, else downloaded into that cache."""
    if name not in ETT_FILES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(ETT_FILES)}")
    candidates = [Path(d).expanduser() for d in (directory, os.environ.get(DATA_ENV)) if d]
    candidates += [SHARED_DATA, CACHE_DIR]
    for folder in candidates:
        if (folder / f"{name}.csv").is_file():
            return _check_sha(folder / f"{name}.csv", name)
    dest = CACHE_DIR / f"{name}.csv"
    try:
        fetch_url(_URL.format(name=name), dest)
    except OSError as exc:
        raise FileNotFoundError(
            f"{name}.csv is not in {', '.join(map(str, candidates))} and could not be downloaded ({exc}); "
            f"set {DATA_ENV} to a folder holding {name}.csv (sha256 {ETT_FILES[name]}) "
            f"or pass directory=..."
        ) from exc
    return _check_sha(dest, name)


def load_ett(name: str = "ETTh1", directory: str | Path | None = None) -> pd.DataFrame:
    """The verified ETT table: columns date, HUFL, HULL, MUFL, MULL, LUFL, LULL, OT."""
    return pd.read_csv(locate_ett(name, directory), parse_dates=["date"])


def split_ett(frame: pd.DataFrame, context: int = CONTEXT) -> dict:
    """Standard ETT split (12/4/4 months), standardised with train statistics.

    Returns {"train", "val", "test"}: float32 arrays (rows, channels); val and test start
    ``context`` rows before their boundary so their first window forecasts the boundary row;
    plus "mean", "std" (per channel) and "columns"."""
    values = frame.drop(columns=["date"], errors="ignore").to_numpy(np.float64)
    ends = (12 * MONTH, 16 * MONTH, 20 * MONTH)
    if context < 1 or context > ends[0]:
        raise ValueError(f"context must be in 1..{ends[0]} rows; got {context}")
    if len(values) < ends[2]:
        raise ValueError(f"an ETT hourly table needs >= {ends[2]} rows for the 12/4/4-month split; got {len(values)}")
    mean, std = values[: ends[0]].mean(0), values[: ends[0]].std(0)  # StandardScaler: population std
    scaled = ((values - mean) / std).astype(np.float32)
    return {
        "train": scaled[: ends[0]],
        "val": scaled[ends[0] - context: ends[1]],
        "test": scaled[ends[1] - context: ends[2]],
        "mean": mean, "std": std,
        "columns": [c for c in frame.columns if c != "date"],
    }


def make_windows(series: np.ndarray, length: int, stride: int = 1) -> torch.Tensor:
    """Channel-independent windows: (rows, C) -> (n_windows * C, length), window-major."""
    if series.ndim != 2 or len(series) < length:
        raise ValueError(f"need a (rows, channels) array with rows >= {length}; got shape {series.shape}")
    x = torch.from_numpy(np.ascontiguousarray(series.T))  # (C, rows)
    w = x.unfold(1, length, stride)  # (C, n, length)
    return w.transpose(0, 1).reshape(-1, length).contiguous()
