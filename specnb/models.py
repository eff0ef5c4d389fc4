"""Model construction and loading.

- ``tiny_model``: small randomly initialised causal LMs of several Hugging Face families (Llama,
  GPT-2, GPT-NeoX, OPT, Qwen2), used by the tests and by ``python -m specnb bench`` on machines
  without the zoo.
- ``perturbed_copy``: a copy of a model with Gaussian noise on every weight, a draft that agrees
  with the target on some tokens and not others.
"""

from __future__ import annotations

import copy

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

__all__ = ["TINY_FAMILIES", "tiny_model", "perturbed_copy"]

TINY_FAMILIES = ("llama", "gpt2", "gpt_neox", "opt", "qwen2")


def _tiny_config(family: str, vocab_size: int, hidden: int, layers: int, heads: int, max_positions: int, init_std: float):
    special = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    if family == "llama":
        return LlamaForCausalLM, LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=max_positions,
            initializer_range=init_std, **special,
        )
    if family == "qwen2":
        return Qwen2ForCausalLM, Qwen2Config(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=max_positions,
            initializer_range=init_std, use_sliding_window=False, **special,
        )
    if family == "gpt2":
        return GPT2LMHeadModel, GPT2Config(
            vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_positions,
            initializer_range=init_std, **special,
        )
    if family == "gpt_neox":
        return GPTNeoXForCausalLM, GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=max_positions, initializer_range=init_std, **special,
        )
    if family == "opt":
        return OPTForCausalLM, OPTConfig(
            vocab_size=vocab_size, hidden_size=hidden, ffn_dim=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=max_positions, word_embed_proj_dim=hidden,
            init_std=init_std, **special,
        )
    raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")


def tiny_model(
    family: str = "llama",
    *,
    vocab_size: int = 96,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 256,
    init_std: float = 0.2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
):
    """A randomly initialised causal LM of ``family`` in eval mode.

    ``init_std`` is larger than the usual 0.02 so logits are spread out: argmax ties (which would
    make greedy comparisons fragile) are unlikely and sampled distributions are far from uniform.
    """
    cls, config = _tiny_config(family, vocab_size, hidden, layers, heads, max_positions, init_std)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    return model.to(device=device, dtype=dtype).eval()


@torch.no_grad()
def perturbed_copy(model, noise: float, seed: int = 0):
    """A deep copy of ``model`` with N(0, (noise * std(w))^2) added to every weight tensor."""
    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise}")
    clone = copy.deepcopy(model)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for p in clone.parameters():
        scale = noise * float(p.float().std()) if p.numel() > 1 else 0.0
        p.add_(torch.randn(p.shape, generator=gen).to(p) * scale)
    return clone.eval()


def _parse_options(parts: list[str]) -> dict:
    opts = {}
    for part in parts:
        if "=" not in part:
            raise ValueError(f"model option {part!r} must look like key=value (e.g. layers=4)")
        key, value = part.split("=", 1)
        try:
            opts[key] = int(value)
        except ValueError:
            try:
                opts[key] = float(value)
            except ValueError:
                opts[key] = value
    return opts


def load_spec(spec: str, *, target=None, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Build or load a model from a command-line spec.

    - ``tiny:FAMILY[:key=value...]``: ``tiny_model(FAMILY, **options)``, e.g. ``tiny:llama:layers=8:hidden=256``;
    - ``copy[:noise=0.1:seed=3]``: a (perturbed) copy of ``target``;
    - anything else: a local directory or hub ID for ``AutoModelForCausalLM.from_pretrained``.
    """
    kind, *rest = spec.split(":")
    if kind == "tiny":
        if not rest:
            raise ValueError(f"spec {spec!r} names no family; use tiny:FAMILY with FAMILY in {', '.join(TINY_FAMILIES)}")
        return tiny_model(rest[0], dtype=dtype, device=device, **_parse_options(rest[1:]))
    if kind == "copy":
        if target is None:
            raise ValueError("a 'copy' draft needs the target; give the target spec first")
        opts = _parse_options(rest)
        return perturbed_copy(target, float(opts.get("noise", 0.0)), int(opts.get("seed", 0)))
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(spec, dtype=dtype).to(device).eval()
