"""A matched-budget family of pruned drafts (``prune_pairs``), saved for later notebooks
(``save_pruned``) and loaded back (``load_pruned``) from ``paths.artifacts_dir()/pruned``."""

from __future__ import annotations

import copy

import pandas as pd
import torch

from specnb.atomic import atomic_dir
from specnb.models import load_model
from specnb.paths import artifacts_dir

from .healing import heal
from .layout import count_parameters, dims
from .prune import prune_to_params

__all__ = ["pruned_name", "prune_pairs", "save_pruned", "load_pruned"]


def pruned_name(how: str, fraction: float, healed: bool) -> str:
    """``"depth-25%"``, ``"width-15%+heal"``: how a draft was cut, its budget, whether healed."""
    return f"{how}-{fraction:.0%}" + ("+heal" if healed else "")


def prune_pairs(target, fractions, calib_ids: torch.Tensor, tokens, *, hows=("depth", "width"),
                heal_minutes: float | None = 1.0, heal_steps: int | None = None, lr: float = 1e-3,
                progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Prune ``target`` to each parameter ``fraction`` both ways (shallow-wide by dropping layers,
    deep-narrow by shrinking width) and, when ``heal_minutes`` or ``heal_steps`` is given, also a
    healed copy of each (``heal`` from the target on ``tokens``).

    Returns ({name: model}, one row per model: name, how, fraction, healed, params, layers,
    hidden, heads, intermediate, kl_start/kl_end to the target on a fixed batch, heal tokens and seconds)."""
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise ValueError(f"fractions must be a non-empty list of numbers in (0, 1); got {fractions!r}")
    bad = [h for h in hows if h not in ("depth", "width")]
    if bad:
        raise ValueError(f"hows may hold 'depth' and 'width'; got {bad}")
    total = count_parameters(target)
    models, rows = {}, []
    for fraction in fractions:
        for how in hows:
            cut = prune_to_params(target, int(fraction * total), calib_ids, how=how)
            variants = [(cut, None)]
            if heal_minutes or heal_steps:
                healed = copy.deepcopy(cut)
                variants.append((healed, heal(healed, target, tokens, steps=heal_steps, minutes=heal_minutes, lr=lr,
                                              progress=progress)))
            for model, log in variants:
                name = pruned_name(how, fraction, log is not None)
                models[name] = model
                n = dims(model)
                rows.append({"name": name, "how": how, "fraction": fraction, "healed": log is not None,
                             "params": count_parameters(model), "layers": n["layers"], "hidden": n["hidden"],
                             "heads": n["heads"], "intermediate": n["intermediate"],
                             "kl_start": log["kl_start"] if log else float("nan"),
                             "kl_end": log["kl_end"] if log else float("nan"),
                             "heal_tokens": log["tokens"] if log else 0, "heal_seconds": log["seconds"] if log else 0.0})
    return models, pd.DataFrame(rows)


def save_pruned(models: dict, tokenizer=None) -> list:
    """Save each ``{name: model}`` (and ``tokenizer``, if given) under
    ``paths.artifacts_dir()/pruned/NAME``, replacing a folder of that name, atomically
    (``specnb.atomic.atomic_dir``: no half-written model is left behind). Returns the paths."""
    root = artifacts_dir() / "pruned"
    out = []
    for name, model in models.items():
        with atomic_dir(root / name) as tmp:
            model.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        out.append(root / name)
    return out


def load_pruned(*, required: bool = False, **kwargs) -> dict:
    """``{name: model}`` of every draft ``save_pruned`` left in ``paths.artifacts_dir()/pruned``
    (empty if notebook 03 has not run in this profile; ``required``: raise instead, naming the fix).
    ``kwargs`` go to ``models.load_model``."""
    root = artifacts_dir() / "pruned"
    names = sorted(p.name for p in root.iterdir() if (p / "config.json").exists()) if root.exists() else []
    if required and not names:
        raise FileNotFoundError(f"no pruned drafts in {root}: run notebooks/03_depth_vs_width.ipynb first, in the same "
                                "SPECNB_PROFILE (it prunes and heals them, then saves them there)")
    return {name: load_model(str(root / name), **kwargs) for name in names}
