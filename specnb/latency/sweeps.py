"""Measured sweeps over models: operator counts and latency, per-component time, backends.

- ``decode_sweep``: per model, dispatched operators and measured latency of one decode step.
- ``component_times`` / ``component_table``: time per decode step in each component (attention,
  MLP, norms, embedding, head), measured with forward pre/post hooks; the table interleaves models.
- ``backend_sweep``: decode latency per backend of ``specnb.bench.backends.backend_step_latency``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd
import torch

from ..bench.backends import backend_step_latency
from ..generate.forward import crop, forward
from ..hooks import ForwardTimer
from ..timing import rotated, step_latency
from .ops import _prefilled_cache, _random_ids, count_operators

__all__ = ["COMPONENTS", "component_times", "component_table", "decode_sweep", "backend_sweep"]


# --------------------------------------------------------------------------------------------
# Component table: where one decode step spends its time
# --------------------------------------------------------------------------------------------

#: module-name patterns of a Hugging Face Llama-style model, by component
COMPONENTS = {
    "attention": ("self_attn",),
    "mlp": ("mlp",),
    "norms": ("input_layernorm", "post_attention_layernorm", "model.norm"),
    "embedding": ("embed_tokens",),
    "head": ("lm_head",),
}


def _component_of(name: str) -> str | None:
    for component, patterns in COMPONENTS.items():
        for p in patterns:
            if name == p or name.endswith("." + p) or (p == "model.norm" and name == "model.norm"):
                return component
    return None


def component_times(model, context: int = 128, tokens: int = 1, repeats: int = 20, seed: int = 0) -> dict:
    """Seconds per decode step spent in each component (attention, MLP, norms,
    embedding, head), measured with forward pre/post hooks on the matching modules around a real
    forward after ``context`` cached tokens; median over ``repeats`` steps (after one warm-up).
    ``total`` is the whole forward; ``other`` what no component covers (masks, RoPE, cache, Python)."""
    if repeats < 5:
        raise ValueError(f"repeats must be >= 5; got {repeats}")
    modules = {n: m for n, m in model.named_modules() if _component_of(n)}
    if not modules:
        raise ValueError(f"{type(model).__name__} has none of the modules {sorted(COMPONENTS)} looks for (Llama-style names)")
    device = next(model.parameters()).device
    cache = _prefilled_cache(model, context, seed)
    step = _random_ids(model, tokens, seed + 1)
    rows = []
    with torch.inference_mode():
        for r in range(repeats + 1):
            with ForwardTimer(modules, device) as timer:
                forward(model, step, cache)
            crop(cache, context)
            if r:  # the first step is a warm-up
                spent = {c: 0.0 for c in COMPONENTS}
                for name, _, seconds in timer.calls:
                    spent[_component_of(name)] += seconds
                rows.append({**spent, "total": timer.total})
    frame = pd.DataFrame(rows).median()
    out = {c: float(frame[c]) for c in COMPONENTS}
    out["total"] = float(frame["total"])
    out["other"] = out["total"] - sum(out[c] for c in COMPONENTS)
    return out


def decode_sweep(models: Mapping[str, torch.nn.Module], context: int = 128, min_run_time: float = 0.3) -> pd.DataFrame:
    """One row per model: width, depth, parameters, dispatched operators of one decode step and its
    measured latency (``specnb.timing.step_latency``) after ``context`` cached tokens."""
    rows = []
    for name, model in models.items():
        cfg = model.config
        cache = _prefilled_cache(model, context)
        rows.append({
            "model": name, "width": cfg.hidden_size, "depth": cfg.num_hidden_layers,
            "params": sum(p.numel() for p in model.parameters()),
            "n_ops": count_operators(model, _random_ids(model, 1, seed=1), cache),
            "decode_s": step_latency(model, context=context, min_run_time=min_run_time)["median_s"],
        })
    return pd.DataFrame(rows)


def component_table(models: Mapping[str, torch.nn.Module], context: int = 128, rounds: int = 6, repeats: int = 5) -> pd.DataFrame:
    """``component_times`` of several models, interleaved: ``rounds`` rounds visiting every model in
    rotated order (A B C, B C A, ...), so drift in the machine's speed hits all alike; the table
    holds, per model (rows, in the given order), the median over rounds of each component (seconds)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    names = list(models)
    rows = []
    for r in range(rounds):
        for name in rotated(names, r):
            rows.append({"model": name, **component_times(models[name], context=context, repeats=repeats, seed=r)})
    return pd.DataFrame(rows).groupby("model", sort=False).median().loc[names]


def backend_sweep(models: dict, *, backends: Iterable[str] = ("eager", "compiled"), context: int = 128,
                  tokens: Iterable[int] = (1,), min_run_time: float = 0.3, progress: bool = True) -> pd.DataFrame:
    """Decode-step latency of every model under every ``backend`` of ``specnb.bench.backends.backend_step_latency``
    ("eager": DynamicCache; "static": preallocated cache; "compiled": static cache + torch.compile,
    compile time reported apart): one tidy row per (model, backend, tokens) with params, layers,
    hidden, median and IQR seconds and compile seconds. What removing per-operator overhead buys."""
    from tqdm import tqdm

    backends, tokens = list(backends), list(tokens)
    if not models or not backends or not tokens:
        raise ValueError("backend_sweep needs at least one model, backend and token count")
    rows = []
    bar = tqdm(total=len(models) * len(backends) * len(tokens), desc="backends", disable=not progress, leave=False)
    for name, model in models.items():
        cfg = model.config
        for backend in backends:
            for n in tokens:
                r = backend_step_latency(model, context=context, tokens=n, backend=backend, min_run_time=min_run_time)
                rows.append({"name": name, "backend": backend, "tokens": n, "context": context,
                             "params": sum(p.numel() for p in model.parameters()), "layers": cfg.num_hidden_layers,
                             "hidden": cfg.hidden_size, "median_s": r["median_s"], "iqr_s": r.get("iqr_s", float("nan")),
                             "compile_seconds": r.get("compile_seconds", 0.0)})
                bar.update()
    bar.close()
    return pd.DataFrame(rows)
