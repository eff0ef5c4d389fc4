"""The Llama layout that pruning slices: validation of models and inputs, widths, parameter counts.

Shapes: ``calib_ids`` is (B, T) token ids; L layers, H hidden channels, Q query heads, K KV heads,
I FFN neurons, d = head_dim.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models import count_parameters

__all__ = ["check_llama", "check_calibration", "check_count", "dims", "count_parameters"]

_LAYER_PARTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")


def _has(obj, dotted: str) -> bool:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


def check_llama(model) -> None:
    """Raise ValueError unless ``model`` has the Llama layout this package slices."""
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


def check_count(name: str, value, most: int) -> None:
    """Raise ValueError unless ``value`` is an integer in 1..``most`` (a count the model can keep)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= most:
        raise ValueError(f"{name} must be an integer in 1..{most} (the model has {most}); got {value!r}")


def dims(model) -> dict:
    """The widths that pruning changes: layers L, hidden H, query heads Q, KV heads K, FFN I, head_dim d."""
    attn = model.model.layers[0].self_attn
    d = attn.head_dim
    return {"layers": len(model.model.layers), "hidden": model.model.embed_tokens.weight.shape[1],
            "heads": attn.q_proj.out_features // d, "kv_heads": attn.k_proj.out_features // d,
            "intermediate": model.model.layers[0].mlp.gate_proj.out_features, "head_dim": d}
