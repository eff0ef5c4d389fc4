"""Structured pruning of a Hugging Face Llama model into a valid, saveable smaller Llama model.

A pruned draft is an ordinary ``LlamaForCausalLM``: fewer layers (depth) or narrower layers
(width), a consistent config, ``save_pretrained`` / ``from_pretrained`` and KV caches that work,
and usable as a draft by ``specnb.speculative_generate`` for the model it was cut from.

Depth (``block_importance``, ``prune_depth``)
    A block that barely changes its input can go. Block Influence, BI_l = 1 - E_tokens[cos(x_l,
    x_{l+1})], the cosine between a decoder layer's input and output hidden states on calibration
    text, as in ShortGPT (Men et al. 2024, "ShortGPT: Layers in Large Language Models are More
    Redundant Than You Expect", arXiv:2403.03853). Gromov et al. 2024 ("The Unreasonable
    Ineffectiveness of the Deeper Layers", arXiv:2403.17887) use the same signal (the angular
    distance arccos(cos)/pi) over blocks of n consecutive layers. Here layers are ranked one by one
    on the original model (one shot, ShortGPT) and the kept ones stay in their original order.

Width (``activation_importance``, ``prune_width``)
    Rank channels by the activations they carry on calibration text, one shot on the original
    model, as in Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning and
    Knowledge Distillation", arXiv:2407.14679), who score heads, MLP neurons and embedding
    channels by activation; LLM-Pruner (Ma et al. 2023, arXiv:2305.11627) prunes the same coupled
    structures; the neuron score is Wanda-like (Sun et al. 2023, arXiv:2306.11695: |weight| x
    activation norm).
    - hidden (embedding) channel c: mean |RMSNorm output_c| summed over every norm (the two of each
      layer and the final one), Minitron's embedding-channel score;
    - attention head h: mean over tokens of ||W_o[:, h] a_h||_2, the L2 norm of the head's
      contribution to the residual stream (a_h: the head's slice of the o_proj input). Under
      grouped-query attention a KV head is removed together with all its query heads, so heads are
      scored and kept per KV group (the sum over its query heads);
    - FFN neuron j: mean |a_j| * ||W_down[:, j]||_2 (a = act(gate) * up, the down_proj input), the
      mean size of the neuron's contribution to the residual stream.
    Heads and neurons are kept per layer (each layer its own best ones, the same number in every
    layer, as the config demands); hidden channels are kept globally. ``head_dim`` never changes.
    Removing hidden channels changes what every RMSNorm divides by: width pruning keeps the
    most active channels but is not exact; ``heal`` recovers most of the gap.

Budget (``prune_to_params``) and healing (``heal``)
    ``prune_to_params`` picks the depth, or one scale shared by hidden size, KV heads and FFN
    width, whose exact parameter count is the largest not above a budget. ``heal`` distills the
    pruned model from its parent for a few steps with the zoo's loss
    (``kd * KL(teacher || student) + (1 - kd) * CE``, ``specnb.zoo.teacher_targets`` and
    ``member_loss``), the "pruning + distillation" recipe of Minitron.

Shapes: ``calib_ids`` is (B, T) token ids; L layers, H hidden channels, Q query heads, K KV heads,
I FFN neurons, d = head_dim.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
from torch import nn

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


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

_LAYER_PARTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")


def _has(obj, dotted: str) -> bool:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


def check_llama(model) -> None:
    """Raise ValueError unless ``model`` has the Llama layout this module slices."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    ok = (isinstance(model, nn.Module) and hasattr(model, "config") and isinstance(layers, nn.ModuleList) and len(layers) > 0
          and all(_has(model, p) for p in ("model.embed_tokens", "model.norm", "lm_head"))
          and all(_has(layer, p) for layer in layers for p in _LAYER_PARTS))
    if not ok:
        raise ValueError(
            "pruning supports LlamaForCausalLM-style models (model.model.layers with self_attn/mlp); "
            f"got {type(model).__name__}"
        )


def check_calibration(model, calib_ids) -> torch.Tensor:
    """The calibration ids as a (B, T) long tensor on the model's device, or a ValueError."""
    if not isinstance(calib_ids, torch.Tensor) or calib_ids.dtype not in (torch.long, torch.int, torch.int32):
        raise ValueError("calib_ids must be an integer torch.Tensor of shape (batch, seq_len), e.g. a few windows of "
                         "held-out text tokenized with the model's tokenizer")
    if calib_ids.dim() != 2 or calib_ids.numel() == 0:
        raise ValueError(f"calib_ids must have shape (batch, seq_len); got {tuple(calib_ids.shape)} "
                         "(add a batch dimension with ids[None])")
    vocab = model.config.vocab_size
    if int(calib_ids.min()) < 0 or int(calib_ids.max()) >= vocab:
        raise ValueError(f"calib_ids hold token ids outside the vocabulary [0, {vocab}); tokenize with the model's own tokenizer")
    return calib_ids.long().to(model.device)


def _check_count(name: str, value, most: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= most:
        raise ValueError(f"{name} must be an integer in 1..{most} (the model has {most}); got {value!r}")


def dims(model) -> dict:
    """The widths that pruning changes: layers L, hidden H, query heads Q, KV heads K, FFN I, head_dim d."""
    attn = model.model.layers[0].self_attn
    d = attn.head_dim
    return {"layers": len(model.model.layers), "hidden": model.model.embed_tokens.weight.shape[1],
            "heads": attn.q_proj.out_features // d, "kv_heads": attn.k_proj.out_features // d,
            "intermediate": model.model.layers[0].mlp.gate_proj.out_features, "head_dim": d}


def count_parameters(model_or_config) -> int:
    """Distinct parameters of a model (tied embeddings once), or of the model a config builds
    (its causal-LM class built on the meta device: no memory used)."""
    if isinstance(model_or_config, nn.Module):
        return sum(p.numel() for p in model_or_config.parameters())
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_or_config)
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Depth: ShortGPT's Block Influence
# --------------------------------------------------------------------------------------------


def _calibration_pass(model, ids: torch.Tensor) -> None:
    """One forward of the (B, T) calibration ids for the hooks; only the last position's logits."""
    import inspect

    last_only = "logits_to_keep" in inspect.signature(type(model).forward).parameters
    model(input_ids=ids, use_cache=False, **({"logits_to_keep": 1} if last_only else {}))


def _hidden_in(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _hidden_out(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def block_importance(model, calib_ids: torch.Tensor) -> torch.Tensor:
    """Block Influence (L,): 1 - mean over tokens of cos(layer input, layer output) (ShortGPT).

    0 for a layer that leaves the residual stream as it is; larger means more important.
    """
    check_llama(model)
    ids = check_calibration(model, calib_ids)
    cosines: list[torch.Tensor] = []
    inputs: dict[int, torch.Tensor] = {}

    def remember_input(i):
        def hook(module, args, kwargs):
            inputs[i] = _hidden_in(args, kwargs)
        return hook

    def compare_output(i):
        def hook(module, args, kwargs, output):
            x, y = inputs.pop(i).float(), _hidden_out(output).float()  # (B, T, H)
            cosines.append(torch.nn.functional.cosine_similarity(x, y, dim=-1).mean())
        return hook

    handles = []
    for i, layer in enumerate(model.model.layers):
        handles.append(layer.register_forward_pre_hook(remember_input(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(compare_output(i), with_kwargs=True))
    try:
        _calibration_pass(model, ids)
    finally:
        for h in handles:
            h.remove()
    return 1 - torch.stack(cosines).cpu()  # (L,)


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
    _check_count("num_layers", num_layers, total)
    if scores is None:
        if calib_ids is None:
            raise ValueError("give calib_ids (token ids (batch, seq_len)) or precomputed scores=block_importance(...)")
        scores = block_importance(model, calib_ids)
    if scores.shape != (total,):
        raise ValueError(f"scores must have shape ({total},), one per layer; got {tuple(scores.shape)}")
    return keep_layers(model, scores.topk(num_layers).indices.tolist())


# --------------------------------------------------------------------------------------------
# Width: activation-based importance (Minitron)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def activation_importance(model, calib_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel importance from one calibration pass.

    Returns ``{"hidden": (H,), "kv_heads": (L, K), "heads": (L, Q), "neurons": (L, I)}``: larger
    means more important; ``kv_heads`` sums each KV group's query heads (see the module docstring).
    """
    check_llama(model)
    ids = check_calibration(model, calib_ids)
    n = dims(model)
    L, H, Q, K, d, I = n["layers"], n["hidden"], n["heads"], n["kv_heads"], n["head_dim"], n["intermediate"]
    tokens = ids.numel()
    hidden = torch.zeros(H)
    heads = torch.zeros(L, Q)
    neuron_act = torch.zeros(L, I)

    def norm_output(module, args, output):
        hidden.add_(output.float().abs().flatten(0, -2).sum(0).cpu())  # (H,)

    def head_contribution(i, o_proj):
        w = o_proj.weight.float().T.reshape(Q, d, -1)  # (Q, d, H)
        gram = w @ w.transpose(1, 2)  # (Q, d, d): ||W_h a||^2 = a^T (W_h^T W_h) a

        def hook(module, args):
            a = args[0].float().reshape(-1, Q, d)  # (N, Q, d)
            sq = torch.einsum("nqd,qde,nqe->nq", a, gram, a).clamp_min(0)
            heads[i].add_(sq.sqrt().sum(0).cpu())
        return hook

    def neuron_activation(i):
        def hook(module, args):
            neuron_act[i].add_(args[0].float().abs().flatten(0, -2).sum(0).cpu())  # (I,)
        return hook

    handles = [model.model.norm.register_forward_hook(norm_output)]
    for i, layer in enumerate(model.model.layers):
        handles.append(layer.input_layernorm.register_forward_hook(norm_output))
        handles.append(layer.post_attention_layernorm.register_forward_hook(norm_output))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(head_contribution(i, layer.self_attn.o_proj)))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(neuron_activation(i)))
    try:
        _calibration_pass(model, ids)
    finally:
        for h in handles:
            h.remove()
    column_norms = torch.stack([layer.mlp.down_proj.weight.float().norm(dim=0).cpu() for layer in model.model.layers])  # (L, I)
    heads /= tokens
    return {
        "hidden": hidden / tokens,
        "heads": heads,
        "kv_heads": heads.reshape(L, K, Q // K).sum(-1),
        "neurons": neuron_act / tokens * column_norms,
    }


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
        _check_count("num_heads", num_heads, n["heads"])
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
    _check_count("num_kv_heads", num_kv_heads, n["kv_heads"])
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
        _check_count("hidden_size", hidden_size, n["hidden"])
    if intermediate_size is not None:
        _check_count("intermediate_size", intermediate_size, n["intermediate"])
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


# --------------------------------------------------------------------------------------------
# A parameter budget
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Healing: a short distillation from the unpruned model, with the zoo's loss
# --------------------------------------------------------------------------------------------


def _settings(batch: int, seq_len: int, kd_weight: float, vocab_size: int):
    from .zoo import TrainSettings

    return TrainSettings(seq_len=seq_len, batch_size=batch, micro_batch=batch, kd_weight=kd_weight,
                         compile=False, autocast=False, vocab_size=vocab_size, warmup_steps=0)


def _targets(teacher, x: torch.Tensor, device, settings):
    from .zoo import teacher_targets

    probs, neg_entropy = teacher_targets(teacher, x.to(teacher.device), settings)
    return probs.to(device), neg_entropy.to(device)


@torch.no_grad()
def distillation_kl(student, teacher, batch: torch.Tensor) -> float:
    """Mean KL(teacher || student) per token on ``batch`` (B, T), via the zoo's loss with kd = 1."""
    from .zoo import Member, member_loss

    settings = _settings(batch.shape[0], batch.shape[1], 1.0, student.config.vocab_size)
    x = batch.to(student.device)
    y = torch.zeros_like(x)  # CE is weighted 0
    member = Member(spec=None, model=student, forward=student, optimizer=None)
    return float(member_loss(member, x, y, _targets(teacher, x, student.device, settings), settings))


def _token_stream(tokens, vocab: int, seq_len: int) -> np.ndarray:
    arr = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
    arr = arr.reshape(-1)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integer token ids (a 1-D stream, e.g. a zoo split); got dtype {arr.dtype}")
    if len(arr) < 2 * seq_len + 2:
        raise ValueError(f"tokens has {len(arr)} ids, too few for windows of seq_len={seq_len}; "
                         f"give at least {2 * seq_len + 2} or lower seq_len")
    if int(arr.min()) < 0 or int(arr.max()) >= vocab:
        raise ValueError(f"tokens hold ids outside the vocabulary [0, {vocab}); tokenize with the model's own tokenizer")
    return arr


def heal(student, teacher, tokens, *, steps: int | None = 100, minutes: float | None = None, lr: float = 3e-4,
         batch: int = 8, seq_len: int = 128, kd_weight: float = 0.5, warmup: int | None = None, seed: int = 0,
         progress: bool = True) -> dict:
    """Distill ``student`` (trained in place) from ``teacher`` on windows of a 1-D token stream.

    Loss per step: ``kd_weight * KL(teacher || student) + (1 - kd_weight) * CE`` (the zoo's
    ``member_loss``), AdamW (``zoo.make_optimizer``), linear warm-up then cosine decay to 0.1 lr
    (``zoo.lr_factor``), gradient clipping at 1. Stops after ``steps`` or ``minutes``, whichever
    comes first. Returns ``{"step", "loss", "lr"}`` lists, ``kl_start`` / ``kl_end`` (KL on one fixed
    batch of windows), ``seconds`` and ``tokens``. The student is left in eval mode; the teacher
    is only read (pass it in eval mode).
    """
    from tqdm import tqdm

    from .zoo import Member, ModelSpec, WindowStream, lr_factor, make_optimizer, train_step

    check_llama(student)
    if steps is None and minutes is None:
        raise ValueError("give steps or minutes (or both) to bound healing")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be > 0; got {minutes!r}")
    if not 0 <= kd_weight <= 1:
        raise ValueError(f"kd_weight must be in [0, 1] (1: pure KL to the teacher, 0: pure LM loss); got {kd_weight!r}")
    if teacher.config.vocab_size != student.config.vocab_size:
        raise ValueError(f"student and teacher vocabularies differ ({student.config.vocab_size} vs "
                         f"{teacher.config.vocab_size}); heal a model pruned from this teacher")
    stream = WindowStream(_token_stream(tokens, student.config.vocab_size, seq_len), seq_len, batch, seed)
    settings = _settings(batch, seq_len, kd_weight, student.config.vocab_size)
    n = dims(student)
    spec = ModelSpec("pruned", n["layers"], n["hidden"], n["heads"], n["intermediate"], "pruned",
                     budget_tokens=(steps or 1) * batch * seq_len, lr=lr, teacher="teacher", head_dim=n["head_dim"])
    member = Member(spec, student, student, make_optimizer(student, spec, settings))
    warmup = warmup if warmup is not None else max(1, (steps or 100) // 10)
    probe = WindowStream(stream.tokens, seq_len, batch, seed + 1).batch(0)[:, :-1]
    kl_start = distillation_kl(student, teacher, probe)
    history = {"step": [], "loss": [], "lr": []}
    start = time.time()
    deadline = start + 60 * minutes if minutes else math.inf
    bar = tqdm(total=steps, disable=not progress, desc="heal", unit="step", dynamic_ncols=True)
    try:
        while (steps is None or member.step < steps) and time.time() < deadline:
            done = member.step / steps if steps else (time.time() - start) / (60 * minutes)
            rate = lr * lr_factor(member.step, done, warmup, 0.1)
            for g in member.optimizer.param_groups:
                g["lr"] = rate
            x = stream.batch(member.step).to(student.device)  # (B, T + 1)
            loss = train_step(member, x, _targets(teacher, x[:, :-1], student.device, settings), settings)
            history["step"].append(member.step)
            history["loss"].append(loss)
            history["lr"].append(rate)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    finally:
        bar.close()
        student.eval()
    history.update(kl_start=kl_start, kl_end=distillation_kl(student, teacher, probe),
                   seconds=time.time() - start, tokens=member.tokens)
    return history


# --------------------------------------------------------------------------------------------
# A matched-budget family of pruned drafts, saved for later notebooks
# --------------------------------------------------------------------------------------------


def pruned_name(how: str, fraction: float, healed: bool) -> str:
    """``"depth-25%"``, ``"width-15%+heal"``: how a draft was cut, its budget, whether healed."""
    return f"{how}-{fraction:.0%}" + ("+heal" if healed else "")


def prune_pairs(target, fractions, calib_ids: torch.Tensor, tokens, *, hows=("depth", "width"),
                heal_minutes: float | None = 1.0, heal_steps: int | None = None, lr: float = 1e-3,
                progress: bool = True) -> tuple[dict, "pd.DataFrame"]:
    """Prune ``target`` to each parameter ``fraction`` both ways (shallow-wide by dropping layers,
    deep-narrow by shrinking width) and, when ``heal_minutes`` or ``heal_steps`` is given, also a
    healed copy of each (``heal`` from the target on ``tokens``).

    Returns ({name: model}, one row per model: name, how, fraction, healed, params, layers,
    hidden, heads, intermediate, kl_start/kl_end to the target on a fixed batch, heal seconds)."""
    import pandas as pd

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
                             "heal_seconds": log["seconds"] if log else 0.0})
    return models, pd.DataFrame(rows)


def save_pruned(models: dict, tokenizer=None) -> list:
    """Save each ``{name: model}`` under ``paths.artifacts_dir()/pruned/NAME`` (written to a temporary
    folder, then renamed: no half-written model is left behind). Returns the paths."""
    import shutil
    import tempfile
    from pathlib import Path

    from .paths import artifacts_dir

    root = artifacts_dir() / "pruned"
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name, model in models.items():
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        out.append(final)
    return out


def load_pruned(**kwargs) -> dict:
    """``{name: model}`` of every draft ``save_pruned`` left in ``paths.artifacts_dir()/pruned``
    (empty if notebook 03 has not run in this profile). ``kwargs`` go to ``models.load_model``."""
    from .models import load_model
    from .paths import artifacts_dir

    root = artifacts_dir() / "pruned"
    names = sorted(p.name for p in root.iterdir() if (p / "config.json").exists()) if root.exists() else []
    return {name: load_model(str(root / name), **kwargs) for name in names}
