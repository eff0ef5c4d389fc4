"""specnb's decoders against Hugging Face's, prompt by prompt, in one interleaved run.

- ``peer_methods(target, drafts, k, eos_token_id)``: the peers of notebook 07, as name ->
  ``fn(input_ids) -> GenerationResult``: HF greedy, specnb autoregressive, HF prompt lookup, specnb
  prompt lookup, and per draft HF assisted and specnb SpS at the same fixed k (and specnb's
  hybrid: prompt lookup, the draft where nothing matches). An EAGLE draft has no HF assisted peer:
  Hugging Face's assisted generation drafts with a causal LM.
- ``interleaved_runs(methods, prompts, runs)``: every method on every prompt, ``runs`` times; the
  order of methods rotates with each (run, prompt), so drift and thermal state hit all alike. One
  tidy row per (run, prompt, method): decode and TTFT seconds, tokens, accepted and judged draft
  tokens, the distinct-4-gram ratio of the output, whether it equals the reference method's
  output in the same run, and the machine's stamp (``timing.environment``).
- ``speedup_table(runs, baseline)``: per method, the paired speedup over ``baseline`` with its
  prompt-level CI (``stats.paired_speedup``), alpha with its CI, token identity and distinct-4.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from ..generate import (GenerationResult, HybridDraft, PromptLookupDraft, autoregressive_generate, hf_generate, judged_tokens,
                        speculative_generate, synchronize)
from ..generate.drafts import builds_source
from ..stats import distinct_ngram_ratio, paired_speedup, pooled_alpha
from ..timing import environment, rotated

__all__ = ["peer_methods", "interleaved_runs", "speedup_table"]

Decoder = Callable[[torch.Tensor], GenerationResult]


def peer_methods(target, drafts: Mapping[str, object], k: int, *, max_new_tokens: int, eos_token_id=None,
                 do_sample: bool = False, temperature: float = 1.0, seed: int = 0, hf: bool = True,
                 hybrid: bool = False, lookup: PromptLookupDraft | None = None) -> dict[str, Decoder]:
    """name -> decoder for the peers; sampled decoders each draw from their own seeded generator.
    ``hf=False`` leaves Hugging Face's out; ``hybrid`` adds specnb's ``HybridDraft`` per draft.
    ``lookup``: specnb's prompt-lookup rule, for its prompt lookup and its hybrids (default
    ``PromptLookupDraft()``, Hugging Face's rule); HF prompt lookup keeps Hugging Face's."""
    lookup = PromptLookupDraft() if lookup is None else lookup
    if not isinstance(lookup, PromptLookupDraft):
        raise ValueError(f"lookup must be a PromptLookupDraft (e.g. PromptLookupDraft(8, 2, pick='last')); got {type(lookup).__name__}")
    rule = dict(max_ngram=lookup.max_ngram, min_ngram=lookup.min_ngram, pick=lookup.pick)
    gen = {}

    def g(name):  # one generator per method, seeded by its name: the order of calls changes no method's draws
        if not do_sample:
            return None
        return gen.setdefault(name, torch.Generator(device=target.device).manual_seed(seed * 1_000_003 + zlib.crc32(name.encode())))

    common = dict(do_sample=do_sample, temperature=temperature, eos_token_id=eos_token_id)
    methods: dict[str, Decoder] = {}
    if hf:
        methods["HF greedy" if not do_sample else "HF sampling"] = \
            lambda p: hf_generate(target, p, max_new_tokens, generator=g("hf"), **common)
    methods["specnb autoregressive"] = lambda p: autoregressive_generate(target, p, max_new_tokens, generator=g("ar"), **common)
    if hf:
        methods["HF prompt lookup"] = lambda p: hf_generate(target, p, max_new_tokens, prompt_lookup=True, k=k,
                                                            generator=g("hfpl"), **common)
    methods["specnb prompt lookup"] = lambda p: speculative_generate(target, PromptLookupDraft(**rule), p, max_new_tokens, k=k,
                                                                     generator=g("pl"), **common)
    for name, draft in drafts.items():
        if hf and not builds_source(draft):  # HF's assisted generation takes a causal LM, not EAGLE
            methods[f"HF assisted {name}"] = lambda p, d=draft, n=name: hf_generate(target, p, max_new_tokens, draft=d, k=k,
                                                                                    generator=g(f"asg {n}"), **common)
        methods[f"specnb SpS {name}"] = lambda p, d=draft, n=name: speculative_generate(target, d, p, max_new_tokens, k=k,
                                                                                       generator=g(f"sps {n}"), **common)
        if hybrid:
            methods[f"specnb hybrid {name}"] = lambda p, d=draft, n=name: speculative_generate(
                target, HybridDraft(d, **rule), p, max_new_tokens, k=k, generator=g(f"hybrid {n}"), **common)
    return methods


def _row(run: int, prompt: int, method: str, r: GenerationResult, wall: float) -> dict:
    new = r.new_tokens.tolist()
    return {"run": run, "prompt": prompt, "method": method, "k": r.k, "new_tokens": len(new),
            "decode_tokens": r.decode_tokens, "seconds": r.seconds, "ttft_seconds": r.ttft_seconds,
            "decode_seconds": r.seconds - r.ttft_seconds, "wall_seconds": wall, "target_calls": r.target_calls,
            "draft_calls": r.draft_calls, "accepted": sum(r.accepted), "judged": judged_tokens(r.accepted, r.proposed),
            "iterations": len(r.accepted), "distinct4": distinct_ngram_ratio(new, 4), "tokens": new}


def interleaved_runs(methods: Mapping[str, Decoder], prompts: Sequence[torch.Tensor], *, runs: int = 3,
                     warmup: int = 1, reference: str | None = None, label: str = "", progress: bool = True) -> pd.DataFrame:
    """One row per (run, prompt, method); ``identical``: the output equals ``reference``'s (default:
    the first method) on that prompt in that run. ``warmup`` untimed passes over the first prompt."""
    if not methods or not prompts:
        raise ValueError("interleaved_runs needs at least one method and one prompt")
    if runs < 1:
        raise ValueError(f"runs must be >= 1; got {runs}")
    names = list(methods)
    reference = reference or names[0]
    if reference not in methods:
        raise ValueError(f"reference {reference!r} is not among the methods {names}")
    device = prompts[0].device
    for _ in range(warmup):
        for name in names:
            methods[name](prompts[0])
    rows = []
    bar = tqdm(total=runs * len(prompts) * len(names), desc=label or "interleaved", disable=not progress, leave=False)
    for run in range(runs):
        for i, ids in enumerate(prompts):
            for name in rotated(names, run * len(prompts) + i):
                synchronize(device)
                start = time.perf_counter()
                result = methods[name](ids)
                synchronize(device)
                rows.append(_row(run, i, name, result, time.perf_counter() - start))
                bar.update()
    bar.close()
    frame = pd.DataFrame(rows)
    ref = frame[frame.method == reference].set_index(["run", "prompt"])["tokens"]
    frame["identical"] = [t == ref[(r, p)] for r, p, t in zip(frame.run, frame.prompt, frame.tokens)]
    frame["tokens"] = frame["tokens"].map(lambda t: " ".join(map(str, t)))
    env = environment(device)
    return frame.assign(**env)


def speedup_table(runs: pd.DataFrame, baseline: str, *, reference: str | None = None) -> pd.DataFrame:
    """Per method: speedup of decode tokens/s over ``baseline`` with its prompt-level 95% CI and the
    range between runs; end-to-end speedup (TTFT included); alpha with its CI; the share of
    (run, prompt) outputs identical to the reference; and the mean distinct-4 of the
    ``reference`` method's outputs (the target's own text), beside every alpha."""
    reference = reference or baseline
    d4 = runs[runs.method == reference]["distinct4"].mean()
    rows = []
    for method in runs["method"].unique():
        s = paired_speedup(runs, method, baseline)
        e2e = paired_speedup(runs, method, baseline, tokens="new_tokens", seconds="seconds")
        g = runs[runs.method == method]
        rows.append({**s, "e2e_speedup": e2e["speedup"], "e2e_ci_low": e2e["ci_low"], "e2e_ci_high": e2e["ci_high"],
                     **pooled_alpha(runs, method), "identical": float(g["identical"].mean()),
                     "target_distinct4": d4, "decode_tokens_per_s": g.decode_tokens.sum() / g.decode_seconds.sum(),
                     "ttft_ms": 1000 * g.ttft_seconds.median(),
                     "tokens_per_iteration": (g.accepted.sum() + g.iterations.sum()) / g.iterations.sum()
                     if g.iterations.sum() else float("nan")})
    return pd.DataFrame(rows)
