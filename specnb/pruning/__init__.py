"""Structured pruning of a Hugging Face Llama model into a valid, saveable smaller Llama model,
used as a speculative-decoding draft for the model it was cut from.

Modules:
- ``layout``: checks of the Llama layout and of calibration ids, widths (``dims``), parameter counts.
- ``importance``: Block Influence (ShortGPT) and head / FFN-neuron / hidden-channel activation scores (Minitron), with forward hooks.
- ``prune``: depth and width pruning into a consistent smaller Llama model, and ``prune_to_params`` (a parameter budget).
- ``healing``: ``heal``, a short distillation from the unpruned model with the zoo's loss, and ``distillation_kl``.
- ``io``: the matched-budget family of drafts (``prune_pairs``), ``save_pruned`` / ``load_pruned``.

Every public name is importable from ``specnb.pruning``; ``__all__`` lists the main entry points
and the lower-level helpers (``check_llama``, ``dims``, ``sliced_linear``, ``set_width``, ...)
are re-exported too.
"""

from __future__ import annotations

from .healing import distillation_kl, heal
from .importance import activation_importance, block_importance
from .io import load_pruned, prune_pairs, pruned_name, save_pruned
from .layout import check_calibration, check_count, check_llama, count_parameters, dims
from .prune import (head_rows, keep_layers, prune_depth, prune_to_params, prune_width, set_width, slice_width,
                    sliced_linear, width_at)

__all__ = [
    "count_parameters",
    "pruned_name",
    "prune_pairs",
    "save_pruned",
    "load_pruned",
    "block_importance",
    "keep_layers",
    "prune_depth",
    "activation_importance",
    "slice_width",
    "prune_width",
    "prune_to_params",
    "distillation_kl",
    "heal",
]
