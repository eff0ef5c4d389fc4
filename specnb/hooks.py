"""``ForwardTimer``: wall time of every forward of named modules, from forward pre/post hooks.

    with ForwardTimer({"target": target, "draft": draft}, device) as timer:
        speculative_generate(target, draft, ids, 32, k=4)
    timer.total, timer.seconds("target"), timer.calls  # calls: (name, input tokens, seconds)

The device is synchronised around every forward (and around the block), so the times attribute
work correctly on a GPU; the syncs themselves cost time, so time a loop without it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch

from .generate.forward import synchronize

__all__ = ["ForwardTimer"]


def _input_tokens(args, kwargs) -> int:
    ids = kwargs.get("input_ids", args[0] if args else None)
    if isinstance(ids, torch.Tensor) and ids.dim() == 2 and not ids.is_floating_point():
        return int(ids.shape[1])
    return 0


class ForwardTimer:
    """Hooks on ``modules`` (name -> module) while the ``with`` block runs: ``calls`` lists
    (name, input tokens, seconds) per forward in order, ``total`` the block's wall time."""

    def __init__(self, modules: Mapping[str, torch.nn.Module], device=None):
        self.modules, self.device = dict(modules), device
        self.calls: list[tuple[str, int, float]] = []
        self.total = float("nan")
        self._starts: dict[str, tuple[float, int]] = {}
        self._handles = []

    def _pre(self, name):
        def hook(module, args, kwargs):
            synchronize(self.device)
            self._starts[name] = (time.perf_counter(), _input_tokens(args, kwargs))
        return hook

    def _post(self, name):
        def hook(module, args, kwargs, output):
            synchronize(self.device)
            t0, tokens = self._starts.pop(name)
            self.calls.append((name, tokens, time.perf_counter() - t0))
        return hook

    def __enter__(self) -> ForwardTimer:
        for name, module in self.modules.items():
            self._handles += [module.register_forward_pre_hook(self._pre(name), with_kwargs=True),
                              module.register_forward_hook(self._post(name), with_kwargs=True)]
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.total = time.perf_counter() - self._t0
        for h in self._handles:
            h.remove()
        self._handles = []

    def seconds(self, name: str | None = None) -> float:
        """Seconds inside the forwards of ``name`` (all modules when None)."""
        return sum(s for n, _, s in self.calls if name is None or n == name)
