"""Prepacked linear weights on a CPU: each ``nn.Linear``'s weight reordered ONCE into oneDNN's
blocked layout, then every call runs oneDNN's linear on it (``torch.ops.mkldnn._reorder_linear_weight``
+ ``_linear_pointwise``: the ops inductor's freezing pass emits for a bf16 CPU linear; for an fp32
one it picks MKL's packed GEMM, ``torch.ops.mkl._mkl_linear``; torch/_inductor/fx_passes/
mkldnn_fusion.py). Here oneDNN's serves both dtypes, and nothing is compiled.

Why: a small LM's decode step on a CPU is mostly GEMMs over weights streamed from memory, and a
stock ``F.linear`` hands each call's weight to a GEMM that lays it out anew; a weight laid out
once skips that. What it pays is measured, not assumed: notebook 07 times HF greedy on the stock
and on the packed target in one interleaved run, and the verify cost of k+1 tokens on each. Same
weights; fp32 arithmetic up to summation order (tests/test_packed.py: logits within 1e-4, greedy
tokens identical to the stock model's for every decoder).

- ``packed(model)``: a copy of ``model`` whose linears are ``PackedLinear``s; every other
  parameter and buffer is shared, not copied. Cached per model (packed again when its linear
  weights change in place); the original is untouched, so a notebook can time stock and packed
  side by side. A hook must go on the copy (an EAGLE source hooks the target it is given). The
  copy is for running: its state dict lacks the packed weights, so save the original.
- ``PackedLinear``: the packed weight and bias, ``(..., in) -> (..., out)``.
- ``can_pack(weight)``: oneDNN packs fp32, and bf16 where the CPU has bf16 kernels; a linear of
  another dtype stays as it is, and a model on a GPU is returned itself (cuBLAS needs no prepacking).
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn

__all__ = ["PackedLinear", "packed", "can_pack"]


def can_pack(weight: torch.Tensor) -> bool:
    """Whether oneDNN can prepack ``weight`` (a CPU tensor in fp32, or bf16 with bf16 kernels)."""
    if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    return weight.dtype == torch.float32 or (weight.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear(nn.Module):
    """``F.linear(x, weight, bias)`` with ``weight`` prepacked by oneDNN: (..., in) -> (..., out)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if not can_pack(linear.weight):
            raise ValueError(f"oneDNN cannot prepack a {linear.weight.dtype} weight on {linear.weight.device}; "
                             "PackedLinear takes a CPU fp32 (or bf16, with bf16 kernels) nn.Linear")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach()), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features; this linear takes {self.in_features}")
        if x.dtype != self.weight.dtype:
            raise ValueError(f"input is {x.dtype} and the packed weight {self.weight.dtype}; cast the input")
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.weight, self.bias, "none", [None], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, oneDNN-packed"


_PACKED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], nn.Module]]" = weakref.WeakKeyDictionary()


def _swap(module: nn.Module) -> int:
    """Replace every packable nn.Linear below ``module`` in place; returns how many."""
    n = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear) and can_pack(child.weight):
            setattr(module, name, PackedLinear(child))
            n += 1
        else:
            n += _swap(child)
    return n


def _versions(model: nn.Module) -> tuple[int, ...]:
    """The in-place version counters of the linears' weights: they change when the weights do."""
    return tuple(m.weight._version for m in model.modules() if isinstance(m, nn.Linear))


@torch.no_grad()
def packed(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its linears prepacked (``PackedLinear``), other tensors shared.
    The same copy is returned for the same model until its linear weights change in place (then
    they are packed again). A model on another device than the CPU is returned as it is (its GEMM
    libraries lay weights out themselves). Raises if nothing in a CPU model can be packed, or if it
    carries forward hooks."""
    if all(p.device.type != "cpu" for p in model.parameters()):
        return model
    versions = _versions(model)
    if model in _PACKED and _PACKED[model][0] == versions:
        return _PACKED[model][1]
    hooked = [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]
    if hooked:
        raise ValueError(f"{type(model).__name__} has forward hooks (on a {type(hooked[0]).__name__}); pack the model "
                         "before hooking it, and hook the packed copy: that is the one that runs")
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}  # deepcopy keeps these, copies the modules
    copy_ = copy.deepcopy(model, shared)
    if _swap(copy_) == 0:
        raise ValueError(f"{type(model).__name__} has no linear oneDNN can prepack (it packs CPU fp32, or bf16 where "
                         "the CPU has bf16 kernels); run it as it is")
    _PACKED[model] = (versions, copy_)
    return copy_
