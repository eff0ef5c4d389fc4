"""Depth and width pruning of a Llama model into a valid smaller one, and pruning to a parameter budget.

A pruned draft is an ordinary ``LlamaForCausalLM``: fewer layers (depth) or narrower layers
(width), a consistent config, ``save_pretrained`` / ``from_pretrained`` and KV caches that work,
and usable as a draft by ``specnb.speculative_generate`` for the model it was cut from. Every
function returns a new model and leaves its input unchanged.

Depth (``keep_layers``, ``prune_depth``)
    Keeps the layers of highest Block Influence (ShortGPT, ``importance.block_importance``) in
    their original order, re-indexing each attention's KV cache slot.

Width (``slice_width``, ``prune_width``)
    Keeps the most active hidden channels, KV heads (each with its query heads, as grouped-query
    attention requires) and FFN neurons (Minitron, ``importance.activation_importance``). Heads
    and neurons are kept per layer (each layer its own best ones, the same number in every layer,
    as the config demands); hidden channels are kept globally. ``head_dim`` never changes.
    Removing hidden channels changes what every RMSNorm divides by: width pruning keeps the most
    active channels but is not exact; ``healing.heal`` recovers most of the gap.

Budget (``prune_to_params``)
    Picks the depth, or one scale shared by hidden size, KV heads and FFN width, whose exact
    parameter count is the largest not above a budget.

Shapes: L layers, H hidden channels, Q query heads, K KV heads, I FFN neurons, d = head_dim.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .importance import activation_importance, block_importance
from .layout import check_count, check_llama, count_parameters, dims

__all__ = ["keep_layers", "prune_depth", "sliced_linear", "head_rows", "slice_width", "set_width", "prune_width",
           "width_at", "prune_to_params"]


def keep_layers(model, indices) -> nn.Module:
    """A new model holding only the decoder layers ``indices`` (in ascending order).

    Re-indexes each kept attention's ``layer_idx`` (the KV cache slot) and slices
    ``config.layer_types`` if the config has one. The input model is not modified.
    """
    check_llama(model)
    total = len(model.model.layers)
    indices = sorted(int(i) for i in indices)
    if not indices or len(set(indices)) != len(indices) or indices[0] < 0 or indices[-1] >= total:
        raise ValueError(f"layer indices must be distinct integers in 0..{total - 1}; got {indices}")
    clone = copy.deepcopy(model)
    clone.model.layers = nn.ModuleList([clone.model.layers[i] for i in indices])
    for new_idx, layer in enumerate(clone.model.layers):
        layer.self_attn.layer_idx = new_idx
    clone.config.num_hidden_layers = len(indices)
    if getattr(clone.config, "layer_types", None):
        clone.config.layer_types = [clone.config.layer_types[i] for i in indices]
    return clone


def prune_depth(model, num_layers: int, calib_ids: torch.Tensor | None = None, *, scores: torch.Tensor | None = None) -> nn.Module:
    """A new model with the ``num_layers`` layers of highest Block Influence, in their original order.

    ``scores`` (L,) skips the calibration pass (e.g. a ``block_importance`` computed once).
    """
    check_llama(model)
    total = len(model.model.layers)
    check_count("num_layers", num_layers, total)
    if scores is None:
        if calib_ids is None:
            raise ValueError("give calib_ids (token ids (batch, seq_len)) or precomputed scores=block_importance(...)")
        scores = block_importance(model, calib_ids)
    if scores.shape != (total,):
        raise ValueError(f"scores must have shape ({total},), one per layer; got {tuple(scores.shape)}")
    return keep_layers(model, scores.topk(num_layers).indices.tolist())



def _new_param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.clone(), requires_grad=like.requires_grad)


def sliced_linear(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new ``nn.Linear`` keeping output features ``rows`` and input features ``cols`` (no re-init)."""
    w = linear.weight
    w = w if rows is None else w.index_select(0, rows.to(w.device))
    w = w if cols is None else w.index_select(1, cols.to(w.device))  # (out', in')
    out = nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None, device="meta", dtype=w.dtype)
    out.weight = _new_param(w, linear.weight)
    if linear.bias is not None:
        b = linear.bias if rows is None else linear.bias.index_select(0, rows.to(w.device))
        out.bias = _new_param(b, linear.bias)
    return out


def _slice_norm(norm: nn.Module, keep: torch.Tensor) -> None:
    norm.weight = _new_param(norm.weight.index_select(0, keep.to(norm.weight.device)), norm.weight)


def head_rows(kv_heads: torch.Tensor, group: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of k/v_proj (K' * d,) and of q_proj (K' * group * d,) for the kept KV heads.

    Query head q reads KV head q // group (``repeat_kv``), so KV head k owns query heads
    k * group .. k * group + group - 1.
    """
    dim = torch.arange(head_dim)
    kv = (kv_heads[:, None] * head_dim + dim).flatten()
    q_heads = (kv_heads[:, None] * group + torch.arange(group)).flatten()
    q = (q_heads[:, None] * head_dim + dim).flatten()
    return kv, q


def slice_width(model, hidden: torch.Tensor | None = None, kv_heads: list[torch.Tensor] | None = None,
                neurons: list[torch.Tensor] | None = None) -> nn.Module:
    """A new model keeping hidden channels ``hidden`` (H',), per layer the KV heads ``kv_heads[l]``
    (K',) with their query heads, and the FFN neurons ``neurons[l]`` (I',). ``None`` keeps all.

    Every layer must keep the same number of heads and neurons. The input model is not modified.
    """
    check_llama(model)
    n = dims(model)
    L, d, group = n["layers"], n["head_dim"], n["heads"] // n["kv_heads"]
    kv_heads = kv_heads if kv_heads is not None else [torch.arange(n["kv_heads"])] * L
    neurons = neurons if neurons is not None else [torch.arange(n["intermediate"])] * L
    if len(kv_heads) != L or len(neurons) != L or len({len(k) for k in kv_heads}) != 1 or len({len(j) for j in neurons}) != 1:
        raise ValueError(f"give one index tensor per layer ({L}) for kv_heads and neurons, the same length in every layer")
    clone = copy.deepcopy(model)
    tied = clone.lm_head.weight is clone.model.embed_tokens.weight
    if hidden is not None:
        emb = clone.model.embed_tokens
        emb.weight = _new_param(emb.weight.index_select(1, hidden.to(emb.weight.device)), emb.weight)  # (V, H')
        emb.embedding_dim = len(hidden)
        _slice_norm(clone.model.norm, hidden)
        clone.lm_head = sliced_linear(clone.lm_head, cols=hidden) if not tied else clone.lm_head
    if tied:
        clone.lm_head.weight = clone.model.embed_tokens.weight
        clone.lm_head.in_features = clone.lm_head.weight.shape[1]
    for layer, kv, ffn in zip(clone.model.layers, kv_heads, neurons):
        attn, mlp = layer.self_attn, layer.mlp
        kv_rows, q_rows = head_rows(torch.as_tensor(kv).long(), group, d)
        attn.q_proj = sliced_linear(attn.q_proj, rows=q_rows, cols=hidden)  # (Q' d, H')
        attn.k_proj = sliced_linear(attn.k_proj, rows=kv_rows, cols=hidden)  # (K' d, H')
        attn.v_proj = sliced_linear(attn.v_proj, rows=kv_rows, cols=hidden)  # (K' d, H')
        attn.o_proj = sliced_linear(attn.o_proj, rows=hidden, cols=q_rows)  # (H', Q' d)
        ffn = torch.as_tensor(ffn).long()
        mlp.gate_proj = sliced_linear(mlp.gate_proj, rows=ffn, cols=hidden)  # (I', H')
        mlp.up_proj = sliced_linear(mlp.up_proj, rows=ffn, cols=hidden)  # (I', H')
        mlp.down_proj = sliced_linear(mlp.down_proj, rows=hidden, cols=ffn)  # (H', I')
        if hidden is not None:
            _slice_norm(layer.input_layernorm, hidden)
            _slice_norm(layer.post_attention_layernorm, hidden)
    new = dims(clone)
    set_width(clone.config, new["hidden"], new["kv_heads"], new["intermediate"], group, d)
    for layer in clone.model.layers:
        for obj in (layer, layer.mlp):
            if hasattr(obj, "hidden_size"):
                obj.hidden_size = new["hidden"]
        if hasattr(layer.mlp, "intermediate_size"):
            layer.mlp.intermediate_size = new["intermediate"]
    return clone


def set_width(config, hidden: int, kv_heads: int, intermediate: int, group: int, head_dim: int):
    """Write the widths into ``config`` (in place; returns it): head_dim is set explicitly, since
    hidden_size // num_attention_heads no longer gives it."""
    config.hidden_size = int(hidden)
    config.num_key_value_heads = int(kv_heads)
    config.num_attention_heads = int(kv_heads * group)
    config.intermediate_size = int(intermediate)
    config.head_dim = int(head_dim)
    return config


def _resolve_heads(n: dict, num_heads, num_kv_heads) -> int:
    group = n["heads"] // n["kv_heads"]
    if num_heads is not None:
        check_count("num_heads", num_heads, n["heads"])
        if num_heads % group:
            raise ValueError(
                f"num_heads must be a multiple of {group}: the model uses grouped-query attention with {group} query "
                f"heads per KV head and a KV head is pruned with all its query heads; try {max(group, num_heads - num_heads % group)} "
                f"or give num_kv_heads instead; got {num_heads}")
        if num_kv_heads is not None and num_kv_heads * group != num_heads:
            raise ValueError(f"num_heads={num_heads} and num_kv_heads={num_kv_heads} disagree (each KV head has {group} "
                             "query heads); give only one of them")
        return num_heads // group
    if num_kv_heads is None:
        return n["kv_heads"]
    check_count("num_kv_heads", num_kv_heads, n["kv_heads"])
    return num_kv_heads


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in ascending index order."""
    return scores.topk(k).indices.sort().values


def prune_width(model, calib_ids: torch.Tensor | None = None, *, hidden_size: int | None = None,
                num_kv_heads: int | None = None, num_heads: int | None = None, intermediate_size: int | None = None,
                scores: dict | None = None) -> nn.Module:
    """A new model narrowed to the given widths, keeping the most active channels (Minitron).

    ``hidden_size`` (embedding channels), ``num_kv_heads`` or ``num_heads`` (query heads, a
    multiple of the GQA group size) and ``intermediate_size``: ``None`` keeps that width.
    ``scores`` (an ``activation_importance`` result) skips the calibration pass.
    """
    check_llama(model)
    n = dims(model)
    if hidden_size is not None:
        check_count("hidden_size", hidden_size, n["hidden"])
    if intermediate_size is not None:
        check_count("intermediate_size", intermediate_size, n["intermediate"])
    kv = _resolve_heads(n, num_heads, num_kv_heads)
    q_heads = kv * (n["heads"] // n["kv_heads"])
    if (hidden_size or n["hidden"]) % q_heads:
        h = hidden_size or n["hidden"]
        raise ValueError(f"hidden_size {h} is not a multiple of the {q_heads} query heads kept (transformers requires it); "
                         f"use {h - h % q_heads or q_heads} or {h + q_heads - h % q_heads}, or keep a head count that divides {h}")
    if scores is None:
        if calib_ids is None:
            raise ValueError("give calib_ids (token ids (batch, seq_len)) or precomputed scores=activation_importance(...)")
        scores = activation_importance(model, calib_ids)
    hidden = None if hidden_size in (None, n["hidden"]) else _top(scores["hidden"], hidden_size)
    heads = [_top(s, kv) for s in scores["kv_heads"]]
    neurons = [_top(s, intermediate_size or n["intermediate"]) for s in scores["neurons"]]
    return slice_width(model, hidden, heads, neurons)



def width_at(n: dict, hidden: int) -> tuple[int, int, int]:
    """(hidden, kv_heads, intermediate) for a uniform scale hidden / H of every width; hidden is
    rounded down to a multiple of the query heads kept (transformers requires it), at least one."""
    s = hidden / n["hidden"]
    kv = max(1, round(n["kv_heads"] * s))
    heads = kv * (n["heads"] // n["kv_heads"])
    return max(heads, hidden - hidden % heads), kv, max(1, round(n["intermediate"] * s))


def _largest_fitting(lo: int, hi: int, count, budget: int) -> int | None:
    """Largest x in lo..hi with count(x) <= budget, for count non-decreasing in x (bisection)."""
    if count(lo) > budget:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if count(mid) <= budget else (lo, mid - 1)
    return lo


def prune_to_params(model, budget_params: int, calib_ids: torch.Tensor, how: str = "depth") -> nn.Module:
    """A new model with the most parameters not above ``budget_params``.

    ``how="depth"`` keeps the best layers (``prune_depth``); ``how="width"`` shrinks hidden size,
    KV heads and FFN width by one shared factor (``prune_width``), searched over every hidden size.
    """
    check_llama(model)
    if how not in ("depth", "width"):
        raise ValueError(f"how must be 'depth' or 'width'; got {how!r}")
    if not isinstance(budget_params, (int, np.integer)) or isinstance(budget_params, bool) or budget_params < 1:
        raise ValueError(f"budget_params must be a positive integer (a parameter count); got {budget_params!r}")
    n = dims(model)
    group = n["heads"] // n["kv_heads"]
    if how == "depth":
        def count(layers: int) -> int:
            config = copy.deepcopy(model.config)
            config.num_hidden_layers = layers
            if getattr(config, "layer_types", None):
                config.layer_types = config.layer_types[:layers]
            return count_parameters(config)
        best = _largest_fitting(1, n["layers"], count, budget_params)
    else:
        def count(hidden: int) -> int:
            return count_parameters(set_width(copy.deepcopy(model.config), *width_at(n, hidden), group, n["head_dim"]))
        best = _largest_fitting(1, n["hidden"], count, budget_params)
    if best is None:
        raise ValueError(f"budget_params={budget_params:,} is below the smallest {how}-pruned model "
                         f"({count(1):,} parameters); raise the budget" + (" or try how='width'" if how == "depth" else ""))
    if how == "depth":
        return prune_depth(model, best, calib_ids)
    hidden, kv, inter = width_at(n, best)
    return prune_width(model, calib_ids, hidden_size=hidden, num_kv_heads=kv, intermediate_size=inter)

