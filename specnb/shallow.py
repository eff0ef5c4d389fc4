"""Shallow drafts made of a target's own layers, on its frozen embedding and head, stored small.

A draft here is an ordinary ``LlamaForCausalLM`` whose decoder layers are copies of some of the
target's (``DraftSpec.layers``, re-indexed for the KV cache), whose final norm is a copy of the
target's, and whose embedding and head *are* the target's (shared modules, frozen). On disk a
draft is one safetensors file of its own weights (fp16) plus its token subset, with its training
record as metadata: a 1-layer draft of SmolLM2-135M is ~7 MB where a full copy would be 540 MB.

The head may cover only the most frequent tokens. On a CPU the head of a small draft costs more
than its layers: SmolLM2's 49,152 x 576 head is 28M multiply-adds and 113 MB of fp32 weights read
per token, against 3.5M for one decoder layer. FR-Spec (Zhao et al. 2025, "FR-Spec: Accelerating
Large-Vocabulary Language Models via Frequency-Ranked Speculative Sampling", arXiv:2502.14856)
keeps only the draft's rows of the most frequent tokens. Verification is untouched, so greedy
output stays the target's; under sampling the draft's q is zero outside the subset, which
Leviathan's rule handles exactly.

- ``frequent_tokens(tokens, n)``: the ``n`` most frequent ids of a token stream, sorted.
- ``SubsetHead``: logits over the subset, scattered into a full-vocabulary row of ``-inf``, so
  every loop (and Hugging Face's assisted generation) sees an ordinary head.
- ``shallow_draft(target, layers, vocab_ids)``: the draft, untrained (the "truncated self-draft").
- ``DraftSpec``: a draft's name, the target layers it starts from, how they were chosen, and for a
  width-pruned draft (``specnb.distill.width_pruned_draft``) the KV heads and FFN neurons each
  layer keeps (``narrowed_config`` writes them into a config).
- ``own_state(draft)``: its weights that are not the target's.
- ``save_draft`` / ``load_draft``: one file each way; ``load_draft`` rebuilds the draft on a target.
- ``load_drafts(target, folder)``: every shallow draft in a folder, by name (``read_metadata``'s
  ``kind`` tells them from the EAGLE drafts of ``specnb.eagle`` stored beside them).

Shared ground: imports nothing of specnb but ``atomic`` (``specnb.models.load_family`` and the
trainer ``specnb.distill`` both build on it).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .atomic import atomic_path

__all__ = ["frequent_tokens", "SubsetHead", "DraftSpec", "narrowed_config", "shallow_draft", "own_state", "save_draft", "read_metadata",
           "load_draft", "load_drafts"]


def frequent_tokens(tokens, n: int, vocab_size: int, always: tuple[int, ...] = ()) -> torch.Tensor:
    """The ``n`` most frequent ids of ``tokens`` (ties by lower id) plus ``always`` (e.g. eos), sorted, int64."""
    arr = np.asarray(tokens).reshape(-1)
    if not 1 <= n <= vocab_size:
        raise ValueError(f"n must be in 1..{vocab_size} (the vocabulary size); got {n}")
    if arr.size == 0 or arr.min() < 0 or arr.max() >= vocab_size:
        raise ValueError(f"tokens must be a non-empty stream of ids in [0, {vocab_size}); tokenize with the target's tokenizer")
    counts = np.bincount(arr, minlength=vocab_size)
    order = np.argsort(-counts, kind="stable")
    keep = set(int(i) for i in always if 0 <= int(i) < vocab_size)
    for i in order:
        if len(keep) >= n:
            break
        keep.add(int(i))
    return torch.tensor(sorted(keep), dtype=torch.int64)


class SubsetHead(nn.Module):
    """``weight[ids] @ h`` for the ids kept, ``-inf`` for every other token: (..., H) -> (..., V).

    ``weight`` is the target's (frozen) head, shared, not copied; ``subset_logits`` returns the
    (..., N) logits alone, for training."""

    def __init__(self, weight: torch.Tensor, ids: torch.Tensor):
        super().__init__()
        ids = torch.as_tensor(ids, dtype=torch.int64)
        if ids.ndim != 1 or ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= weight.shape[0]:
            raise ValueError(f"ids must be a 1-D, non-empty set of token ids below {weight.shape[0]}")
        self.vocab_size = weight.shape[0]
        self.register_buffer("ids", ids.to(weight.device), persistent=False)
        self.register_buffer("weight", weight.detach()[ids].clone(), persistent=False)  # (N, H)

    def subset_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.weight.to(hidden.dtype).T  # (..., N)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        small = self.subset_logits(hidden)
        out = small.new_full((*small.shape[:-1], self.vocab_size), float("-inf"))
        return out.index_copy_(-1, self.ids, small)  # (..., V)


SHARED = ("model.embed_tokens.", "lm_head.")


@dataclass(frozen=True)
class DraftSpec:
    """A draft to train: its name, which target layers initialise it, and how it was chosen."""
    name: str
    layers: tuple[int, ...]
    init: str = "first layers"  # or "block influence" (ShortGPT), for a depth-pruned draft
    kv_heads: int | None = None  # KV heads kept per layer, each with its query heads (width-pruned); None: all
    intermediate: int | None = None  # FFN neurons kept per layer (width-pruned); None: all

    @property
    def narrowed(self) -> bool:
        return self.kv_heads is not None or self.intermediate is not None


def narrowed_config(config, kv_heads: int | None = None, intermediate: int | None = None):
    """``config`` (in place; returns it) with ``kv_heads`` KV heads per layer, each with its
    ``num_attention_heads // num_key_value_heads`` query heads, and ``intermediate`` FFN neurons;
    head_dim is set explicitly, since hidden_size // num_attention_heads no longer gives it."""
    group = config.num_attention_heads // config.num_key_value_heads
    config.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if kv_heads is not None:
        config.num_key_value_heads, config.num_attention_heads = int(kv_heads), int(kv_heads) * group
    if intermediate is not None:
        config.intermediate_size = int(intermediate)
    return config


def shallow_draft(target, layers, vocab_ids: torch.Tensor | None = None) -> nn.Module:
    """A draft of ``target``'s decoder ``layers`` (ascending), its final norm, and its embedding and
    head shared; the head restricted to ``vocab_ids`` when given (``SubsetHead``). In eval mode."""
    if not hasattr(getattr(target, "model", None), "layers") or not hasattr(target, "lm_head"):
        raise ValueError(f"shallow_draft needs a Llama-style causal LM (model.layers, lm_head); got {type(target).__name__}")
    total = len(target.model.layers)
    layers = [int(i) for i in layers]
    if not layers or layers != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= total:
        raise ValueError(f"layers must be distinct ascending indices in 0..{total - 1}; got {layers}")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layers]
    with torch.device("meta"):
        draft = type(target)(config)
    draft.model.layers = nn.ModuleList(copy.deepcopy(target.model.layers[i]) for i in layers)
    for new_idx, layer in enumerate(draft.model.layers):
        layer.self_attn.layer_idx = new_idx  # the KV cache slot
    draft.model.norm = copy.deepcopy(target.model.norm)
    draft.model.rotary_emb = copy.deepcopy(target.model.rotary_emb)
    draft.model.embed_tokens = target.model.embed_tokens
    draft.lm_head = target.lm_head if vocab_ids is None else SubsetHead(target.lm_head.weight, vocab_ids)
    for p in list(draft.model.layers.parameters()) + list(draft.model.norm.parameters()):
        p.requires_grad_(True)  # the draft's own weights, whatever the target's flags
    for p in list(draft.model.embed_tokens.parameters()) + list(draft.lm_head.parameters()):
        p.requires_grad_(False)
    return draft.eval()


def own_state(draft) -> dict[str, torch.Tensor]:
    """The draft's weights that are not the target's (its layers and final norm)."""
    return {k: v for k, v in draft.state_dict().items() if not k.startswith(SHARED)}


def save_draft(draft, path: str | Path, *, spec: DraftSpec, target_name: str, record: dict | None = None) -> Path:
    """Write ``draft``'s own weights (fp16), its token subset and ``spec`` + ``record`` (JSON metadata)
    to one safetensors file, atomically."""
    path = Path(path)
    tensors = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in own_state(draft).items()}
    if isinstance(draft.lm_head, SubsetHead):
        tensors["vocab_ids"] = draft.lm_head.ids.cpu()
    meta = {"spec": json.dumps(asdict(spec)), "target": target_name, "record": json.dumps(record or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | Path) -> dict:
    """``{"kind": "shallow" or "eagle", "spec": DraftSpec, "target": str, "record": dict}`` of a saved draft."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    spec = json.loads(meta["spec"])
    return {"kind": meta.get("kind", "shallow"),
            "spec": DraftSpec(spec["name"], tuple(spec["layers"]), spec["init"], spec.get("kv_heads"), spec.get("intermediate")),
            "target": meta["target"], "record": json.loads(meta["record"])}


def load_draft(target, path: str | Path, *, full_head: bool = False) -> nn.Module:
    """Rebuild a saved draft on ``target`` (its embedding and head are taken from it). ``full_head``
    ignores the stored token subset and drafts over the whole vocabulary."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no draft at {path}; train one with `python -m specnb.distill train`")
    meta = read_metadata(path)
    if meta["kind"] != "shallow":
        raise ValueError(f"{path} is a {meta['kind']} draft, not a shallow one; load it with specnb.eagle.load_eagle")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    ids = tensors.pop("vocab_ids", None)
    spec = meta["spec"]
    draft = shallow_draft(target, range(len(spec.layers)), None if full_head else ids)
    dtype = next(target.parameters()).dtype
    if spec.narrowed:  # width-pruned layers: the same layer class at the stored widths, filled below
        draft.config = narrowed_config(draft.config, spec.kv_heads, spec.intermediate)
        cls = type(draft.model.layers[0])
        draft.model.layers = nn.ModuleList(cls(draft.config, i) for i in range(len(spec.layers))).to(draft.device, dtype)
    missing, unexpected = draft.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=False)
    if unexpected or any(not k.startswith(SHARED) for k in missing):
        raise ValueError(f"{path} does not fit this target (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                         f"it was trained for {meta['target']!r}")
    return draft.eval()


def load_drafts(target, folder: str | Path, **kwargs) -> dict[str, nn.Module]:
    """name -> draft for every shallow ``*.safetensors`` draft in ``folder``, sorted by name
    (EAGLE drafts are ``specnb.eagle.load_eagles``'s)."""
    paths = sorted(Path(folder).glob("*.safetensors"))
    return {p.stem: load_draft(target, p, **kwargs) for p in paths if read_metadata(p)["kind"] == "shallow"}
