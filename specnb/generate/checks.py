"""Input checks that run before any forward pass: each raises a ValueError that names the fix.

- ``validate(target, draft, input_ids, max_new_tokens, k, do_sample, temperature, verify)``
- ``check_model(model, role)``: a decoder-only HF causal LM with a croppable KV cache
- ``check_generator(device, generator)``: the generator lives on the model's device
- ``vocab_size(model)``, ``max_positions(model)``
"""

from __future__ import annotations

import torch

from .drafts import builds_source
from .forward import cache_argument

__all__ = ["validate", "check_model", "check_generator", "check_k", "vocab_size", "max_positions"]


def vocab_size(model) -> int:
    """Logits per position: the output head's width, else ``config.vocab_size``."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and hasattr(head, "out_features"):
        return int(head.out_features)
    return int(model.config.vocab_size)


def max_positions(model) -> int | None:
    """The model's position limit from its config, or None if it states none."""
    cfg = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_model(model, role: str) -> None:
    if builds_source(model):
        raise ValueError(f"{role} ({type(model).__name__}) drafts from the target's features inside specnb's loop and is "
                         "no causal LM; pass it to speculative_generate (Hugging Face's assisted generation needs a causal LM)")
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise ValueError(f"{role} must be a Hugging Face causal LM (a PreTrainedModel); got {type(model).__name__}")
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"{role} is an encoder-decoder model; speculative decoding here needs a decoder-only causal LM")
    supports = getattr(type(model), "_supports_default_dynamic_cache", None)
    if supports is None or not supports() or not hasattr(model, "get_output_embeddings") or cache_argument(type(model)) is None:
        raise ValueError(
            f"{role} ({type(model).__name__}) has no usable KV cache that can be cropped (DynamicCache); "
            "use a decoder-only transformer such as Llama, GPT-2, GPT-NeoX, OPT or Qwen2"
        )


def check_k(k) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k (draft tokens per iteration) must be an integer >= 1; got {k!r}")


def check_generator(device: torch.device, generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the model runs on {device}; "
                         f"create it with torch.Generator(device={str(device)!r})")
    return generator


def validate(target, draft, input_ids, max_new_tokens, k, do_sample, temperature, verify="parallel") -> None:
    """Every check of a generation call; ``k`` None skips the k check (a schedule is checked apart)."""
    check_model(target, "target")
    if draft is not None:
        check_model(draft, "draft")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int, torch.int32):
        raise ValueError("input_ids must be an integer torch.Tensor of shape (1, prompt_len), e.g. tokenizer(..., return_tensors='pt').input_ids")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (1, prompt_len); got {tuple(input_ids.shape)} (add a batch dimension with input_ids[None])")
    if input_ids.shape[0] != 1:
        raise ValueError(f"batch size must be 1; got {input_ids.shape[0]} prompts (loop over prompts one at a time)")
    if input_ids.shape[1] < 1:
        raise ValueError("the prompt is empty; give at least one token (e.g. the BOS token)")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}")
    if k is not None:
        check_k(k)
    if do_sample and not (temperature > 0):
        raise ValueError(f"temperature must be > 0 when do_sample=True; got {temperature!r} (use do_sample=False for greedy)")
    if verify not in ("parallel", "sequential"):
        raise ValueError(f"verify must be 'parallel' or 'sequential'; got {verify!r}")
    vocab = vocab_size(target)
    if draft is not None and vocab_size(draft) != vocab:
        raise ValueError(
            f"draft and target vocabularies differ ({vocab_size(draft)} vs {vocab} logits); "
            "use a draft from the same family/tokenizer as the target"
        )
    if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab:
        raise ValueError(f"input_ids hold token ids outside the vocabulary [0, {vocab}); tokenize with the model's own tokenizer")
    total = input_ids.shape[1] + max_new_tokens
    for model, role in ((target, "target"), (draft, "draft")):
        limit = max_positions(model) if model is not None else None
        if limit is not None and total > limit:
            raise ValueError(
                f"prompt ({input_ids.shape[1]}) + max_new_tokens ({max_new_tokens}) = {total} exceeds the {role}'s "
                f"{limit} positions; shorten the prompt or lower max_new_tokens"
            )
