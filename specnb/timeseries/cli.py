"""Command line: ``python -m specnb.timeseries train [NAME ...] [--force] [--data DIR]``."""

from __future__ import annotations

import argparse

from .data import DATA_ENV
from .training import MODELS, TS_DIR, train, train_ensemble

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m specnb.timeseries train [NAME ...] [--force]``: train the presets in MODELS
    (all by default, in order, skipping finished ones unless --force)."""
    parser = argparse.ArgumentParser(prog="python -m specnb.timeseries", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train (or resume) the preset models into data/ts/")
    tr.add_argument("names", nargs="*", help=f"presets (default: all): {', '.join(MODELS)}")
    tr.add_argument("--force", action="store_true", help="retrain even if weights exist")
    tr.add_argument("--data", default=None, help=f"folder with ETTh1.csv / ETTh2.csv (default ${DATA_ENV})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {list(MODELS)}")
    for name in args.names or list(MODELS):
        if (TS_DIR / name / "model.safetensors").exists() and not args.force:
            print(f"{name}: weights exist, skipping (use --force to retrain)")
            continue
        preset = MODELS[name]
        info = (train_ensemble if "members" in preset else train)(name, data_dir=args.data, **preset)
        print(f"{name}: {info['params']:,} params, best val {info['best_val_loss']:.4f}, {info['train_seconds']:.0f} s")
    return 0
