"""Importance scores from one calibration pass, with forward hooks, on the original model (one shot).

Depth (``block_importance``)
    A block that barely changes its input can go. Block Influence, BI_l = 1 - E_tokens[cos(x_l,
    x_{l+1})], the cosine between a decoder layer's input and output hidden states on calibration
    text, as in ShortGPT (Men et al. 2024, "ShortGPT: Layers in Large Language Models are More
    Redundant Than You Expect", arXiv:2403.03853). Gromov et al. 2024 ("The Unreasonable
    Ineffectiveness of the Deeper Layers", arXiv:2403.17887) use the same signal (the angular
    distance arccos(cos)/pi) over blocks of n consecutive layers. Here layers are scored one by one.

Width (``activation_importance``)
    Channels ranked by the activations they carry on calibration text, as in Minitron
    (Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge Distillation",
    arXiv:2407.14679), who score heads, MLP neurons and embedding channels by activation;
    LLM-Pruner (Ma et al. 2023, arXiv:2305.11627) prunes the same coupled structures; the neuron
    score is Wanda-like (Sun et al. 2023, arXiv:2306.11695: |weight| x activation norm).
    - hidden (embedding) channel c: mean |RMSNorm output_c| summed over every norm (the two of each
      layer and the final one), Minitron's embedding-channel score;
    - attention head h: mean over tokens of ||W_o[:, h] a_h||_2, the L2 norm of the head's
      contribution to the residual stream (a_h: the head's slice of the o_proj input). Under
      grouped-query attention a KV head is removed together with all its query heads, so heads are
      also scored per KV group (the sum over its query heads);
    - FFN neuron j: mean |a_j| * ||W_down[:, j]||_2 (a = act(gate) * up, the down_proj input), the
      mean size of the neuron's contribution to the residual stream.
"""

from __future__ import annotations

import inspect

import torch

from .layout import check_calibration, check_llama, dims

__all__ = ["block_importance", "activation_importance"]


def _calibration_pass(model, ids: torch.Tensor, handles: list) -> None:
    """One forward of the (B, T) calibration ids for the hooks ``handles`` (removed afterwards,
    even on an error); only the last position's logits are computed."""
    last_only = "logits_to_keep" in inspect.signature(type(model).forward).parameters
    try:
        model(input_ids=ids, use_cache=False, **({"logits_to_keep": 1} if last_only else {}))
    finally:
        for h in handles:
            h.remove()


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
    _calibration_pass(model, ids, handles)
    return 1 - torch.stack(cosines).cpu()  # (L,)


@torch.no_grad()
def activation_importance(model, calib_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel importance from one calibration pass (Minitron; see the module docstring).

    Returns ``{"hidden": (H,), "kv_heads": (L, K), "heads": (L, Q), "neurons": (L, I)}``: larger
    means more important; ``kv_heads`` sums each KV group's query heads.
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
    _calibration_pass(model, ids, handles)
    column_norms = torch.stack([layer.mlp.down_proj.weight.float().norm(dim=0).cpu() for layer in model.model.layers])  # (L, I)
    heads /= tokens
    return {
        "hidden": hidden / tokens,
        "heads": heads,
        "kv_heads": heads.reshape(L, K, Q // K).sum(-1),
        "neurons": neuron_act / tokens * column_norms,
    }
