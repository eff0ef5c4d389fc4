"""Width-pruned shallow drafts: a few of the target's layers, each narrowed (Minitron), on its
frozen embedding and head.

Seed 004 (Yan et al. 2024, "Decoding Speculative Decoding", arXiv:2402.01528) compares drafts of
equal parameters that trade depth for width. A depth-pruned draft keeps whole layers
(``shallow.DraftSpec(init="block influence")``); a width-pruned one keeps more layers, each with
fewer KV heads (with their query heads) and FFN neurons, ranked by their activations on the
*target* (Minitron, Muralidharan et al. 2024, arXiv:2407.14679; ``pruning.activation_importance``).
The hidden size stays the target's, so the embedding and head are still shared and not stored.
"""

from __future__ import annotations

import torch
from torch import nn

from ..pruning import activation_importance, prune_width
from ..shallow import shallow_draft

__all__ = ["width_pruned_draft"]


def width_pruned_draft(target, layers, vocab_ids: torch.Tensor | None = None, *, kv_heads: int | None = None,
                       intermediate: int | None = None, calib_ids: torch.Tensor | None = None,
                       scores: dict | None = None) -> nn.Module:
    """``shallow_draft(target, layers, vocab_ids)`` with each layer keeping its ``kv_heads`` most
    important KV heads (with their query heads) and ``intermediate`` most important FFN neurons,
    as ranked in that layer of the target on ``calib_ids`` (B, T) (or ``scores``, an
    ``activation_importance(target, ...)`` result). Embedding and head: the target's, shared."""
    if kv_heads is None and intermediate is None:
        raise ValueError("give kv_heads and/or intermediate (the widths to keep); without them use shallow.shallow_draft")
    if scores is None:
        if calib_ids is None:
            raise ValueError("give calib_ids (token ids (batch, seq_len) of held-out text) or scores=activation_importance(target, ...)")
        scores = activation_importance(target, calib_ids)
    draft = shallow_draft(target, layers, vocab_ids)
    rows = torch.as_tensor([int(i) for i in layers])
    sub = {"hidden": scores["hidden"], "kv_heads": scores["kv_heads"][rows], "neurons": scores["neurons"][rows]}
    narrow = prune_width(draft, scores=sub, num_kv_heads=kv_heads, intermediate_size=intermediate)
    narrow.model.embed_tokens, narrow.lm_head = draft.model.embed_tokens, draft.lm_head  # the target's, shared again
    for p in list(narrow.model.layers.parameters()) + list(narrow.model.norm.parameters()):
        p.requires_grad_(True)
    for p in list(narrow.model.embed_tokens.parameters()) + list(narrow.lm_head.parameters()):
        p.requires_grad_(False)
    return narrow.eval()
