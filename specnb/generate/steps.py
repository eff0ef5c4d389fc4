"""Steps: one model's forward at an explicit position, the KV cache kept inside (gpt-fast's
``input_pos``). The decoding loops call ``step(input_ids, input_pos, last_only)`` and never see
the cache; ``backend=`` picks the step, not a second loop.

- ``DynamicStep`` ("eager"): a ``DynamicCache``; a step at ``input_pos`` first crops the cache
  to ``input_pos`` tokens (rollback after a rejection), then appends.
- ``StaticStep`` ("static", "compiled"): the model's preallocated static cache
  (``specnb.generate.static``); a step writes at ``input_pos`` and rollback is free. Compiled
  steps have fixed shapes: a verification narrower than the compiled k_max + 1 is padded with
  copies of its last token and only its real rows are returned; the prefill (position 0) runs
  eager, so a new prompt length compiles nothing.
- ``make_steps(target, draft, backend, length, k_max)``: both steps and the seconds spent
  compiling (before any clock starts).

Every step returns float32 logits (n, V), or (1, V) with ``last_only``.
"""

from __future__ import annotations

import torch

from .forward import forward, new_cache
from .static import check_static_support, run_step, static_state, warmup

__all__ = ["BACKENDS", "DynamicStep", "StaticStep", "make_steps", "check_backend"]

BACKENDS = ("eager", "static", "compiled")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")


class DynamicStep:
    """A model and its ``DynamicCache``, cropped to ``input_pos`` before each forward."""

    def __init__(self, model):
        self.model, self.cache = model, new_cache(model)

    def __call__(self, input_ids: torch.Tensor, input_pos: int, last_only: bool = False) -> torch.Tensor:
        held = self.cache.get_seq_length()
        if input_pos > held:
            raise RuntimeError(f"step at position {input_pos} but the cache holds only {held} tokens")
        if input_pos < held:
            self.cache.crop(input_pos - held)  # negative: tokens to remove
        return forward(self.model, input_ids, self.cache, last_only)[0]


class StaticStep:
    """A model's static cache in one role, written at ``input_pos``; ``compiled`` runs the
    ``torch.compile``d step of each shape, the verification padded to ``k_max`` + 1 tokens."""

    def __init__(self, model, role: str, length: int, compiled: bool, k_max: int | None = None):
        self.model, self.compiled, self.width = model, compiled, (k_max + 1 if k_max is not None else None)
        self.state = static_state(model, length, role)

    def __call__(self, input_ids: torch.Tensor, input_pos: int, last_only: bool = False) -> torch.Tensor:
        n = input_ids.shape[1]
        compiled = self.compiled and input_pos > 0  # prefill (position 0) stays eager: one call per prompt length
        if compiled and not last_only and self.width is not None and n < self.width:
            pad = input_ids[:, -1:].expand(1, self.width - n)  # rows after the real ones: ignored, overwritten later
            input_ids = torch.cat([input_ids, pad], dim=1)
        logits = run_step(self.model, self.state, input_ids.to(self.model.device), input_pos, last_only=last_only,
                          compiled=compiled)
        return logits[0] if last_only else logits[0, :n]


def make_steps(target, draft, backend: str, length: int, k_max: int | None = None):
    """(target step, draft step or None, compile seconds) for ``backend``; ``length``: the most
    tokens a cache must hold (prompt + max_new_tokens)."""
    check_backend(backend)
    if backend == "eager":
        return DynamicStep(target), (DynamicStep(draft) if draft is not None else None), 0.0
    check_static_support(target, "target")
    if draft is not None:
        check_static_support(draft, "draft")
    compiled = backend == "compiled"
    length += 1  # the compiled steps' warm-up and padded rows may write one slot past the last token
    compile_s = warmup(target, draft, length=length + (k_max or 0), k=k_max) if compiled else 0.0
    t_step = StaticStep(target, "target", length + (k_max or 0), compiled, k_max)
    d_step = StaticStep(draft, "draft", length + (k_max or 0), compiled) if draft is not None else None
    return t_step, d_step, compile_s
