"""Random-init Llama models for latency studies (latency does not depend on the weights' values).

- ``llama_config`` / ``llama_ladder``: zoo-like Llama configurations and models over widths and depths.

``transformers`` and ``specnb.zoo`` are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .. import models

__all__ = ["ZOO_VOCAB", "llama_config", "llama_ladder"]

ZOO_VOCAB = 4096  # the zoo's tokenizer


def llama_config(width: int, depth: int, *, head_dim: int = 52, ffn_ratio: float = 1024 / 416,
                 vocab_size: int = ZOO_VOCAB, max_positions: int = 1024):
    """A zoo-like ``LlamaConfig``: heads ~ width / head_dim (lowered until it divides width) of width ``head_dim``
    (MHA), FFN = ``ffn_ratio`` x width rounded to a multiple of 16 (the zoo target: 416 -> 1024),
    tied embeddings, vocabulary 4096."""
    if width < 1 or depth < 1 or head_dim < 1:
        raise ValueError(f"width, depth and head_dim must be >= 1; got {width}, {depth}, {head_dim}")
    heads = max(1, round(width / head_dim))
    while width % heads:  # transformers requires hidden_size divisible by the number of heads
        heads -= 1
    ffn = max(16, int(round(width * ffn_ratio / 16)) * 16)
    return models.llama_config(hidden=width, layers=depth, heads=heads, ffn=ffn, vocab_size=vocab_size, head_dim=head_dim,
                               max_positions=max_positions, bos_token_id=0, eos_token_id=0, pad_token_id=0)


def llama_ladder(widths: Iterable[int] = (416,), depths: Iterable[int] = (1, 12), *, seed: int = 0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", **config_kw) -> dict:
    """Random-init ``LlamaForCausalLM`` models for every (width, depth), named ``w{width}-d{depth}``,
    in eval mode (``config_kw`` goes to ``llama_config``)."""
    from transformers import LlamaForCausalLM

    out = {}
    for w in widths:
        for L in depths:
            config = llama_config(int(w), int(L), **config_kw)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = LlamaForCausalLM(config)
            out[f"w{w}-d{L}"] = model.to(device=device, dtype=dtype).eval()
    return out
