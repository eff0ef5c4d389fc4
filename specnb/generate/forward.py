"""One forward of a Hugging Face causal LM over a KV cache, and the device sync that timing needs.

- ``cache_argument(cls)``: the keyword ``cls.forward`` takes its cache under (``cache`` from
  transformers 5.24, ``past_key_values`` before; the old name is a deprecated alias there)
- ``new_cache``, ``forward``, ``crop``: a croppable ``DynamicCache`` and a forward over it
- ``synchronize(device)``: wait for queued GPU work before a timestamp
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers import DynamicCache

__all__ = ["cache_argument", "accepts_logits_to_keep", "new_cache", "forward", "crop", "synchronize"]


@functools.lru_cache(maxsize=None)
def cache_argument(cls: type) -> str | None:
    """The keyword under which ``cls.forward`` takes its KV cache: ``cache`` (transformers >= 5.24,
    where ``past_key_values`` is a deprecated alias that warns) or ``past_key_values`` (earlier 5.x);
    None if it takes neither."""
    params = inspect.signature(cls.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


@functools.lru_cache(maxsize=None)
def accepts_logits_to_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def new_cache(model) -> DynamicCache:
    """An empty, croppable KV cache for ``model``."""
    return DynamicCache(config=model.config)


def forward(model, input_ids: torch.Tensor, cache: DynamicCache, last_only: bool = False) -> torch.Tensor:
    """Run ``input_ids`` (1, n) through ``model`` after ``cache``; return float32 logits (1, n or 1, V)."""
    kwargs = {"logits_to_keep": 1} if last_only and accepts_logits_to_keep(type(model)) else {}
    kwargs[cache_argument(type(model))] = cache
    logits = model(input_ids=input_ids.to(model.device), use_cache=True, **kwargs).logits
    return (logits[:, -1:] if last_only else logits).float()


def crop(cache: DynamicCache, length: int) -> None:
    """Roll ``cache`` back to its first ``length`` tokens (``DynamicCache.crop`` takes a negative n:
    the tokens to remove)."""
    remove = cache.get_seq_length() - length
    if remove > 0:
        cache.crop(-remove)


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued GPU work so a timestamp means what it says (no-op on CPU). ``None`` syncs
    every CUDA device this process has used (so callers that do not know the device stay honest)."""
    device = torch.device(device) if device is not None else None
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    elif device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
