"""Where specnb reads and writes, resolved from the package, never from the working directory.

Two profiles, chosen by the environment variable ``SPECNB_PROFILE``:

- ``full`` (default): the real study. Results go to ``data/results/`` and figures to ``figures/``;
  both are committed.
- ``quick``: the same code path on fewer prompts and sizes, used by ``make test`` (nbval). Its
  results and figures go to ``.specnb-quick/`` (git-ignored), so a test run never overwrites a
  committed full-profile artefact.

``SPECNB_ROOT`` overrides the project root (useful when specnb is installed outside a checkout).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PROFILES = ("quick", "full")


def _find_root() -> Path:
    env = os.environ.get("SPECNB_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent


ROOT: Path = _find_root()
DATA: Path = ROOT / "data"
ZOO: Path = DATA / "zoo"
FIGURES: Path = ROOT / "figures"
NOTEBOOKS: Path = ROOT / "notebooks"
QUICK: Path = ROOT / ".specnb-quick"


def profile() -> str:
    """The active profile: ``"quick"`` or ``"full"`` (from ``SPECNB_PROFILE``, default full)."""
    value = os.environ.get("SPECNB_PROFILE", "full").strip().lower() or "full"
    if value not in PROFILES:
        raise ValueError(
            f"SPECNB_PROFILE={value!r} is not a profile; set it to 'quick' (tests) or 'full' (the study)."
        )
    return value


def by_profile(*, quick: T, full: T) -> T:
    """Pick a setting by profile, e.g. ``n_prompts = by_profile(quick=2, full=20)``."""
    return quick if profile() == "quick" else full


def results_dir() -> Path:
    """Directory for result CSVs of the active profile (created on demand)."""
    path = DATA / "results" if profile() == "full" else QUICK / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir() -> Path:
    """Directory for figures of the active profile (created on demand)."""
    path = FIGURES if profile() == "full" else QUICK / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path
