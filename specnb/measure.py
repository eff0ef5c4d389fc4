"""Measurements the notebooks run, returning tidy rows (one concern: turning models into numbers).

- ``heldout_prompts``: prompts cut from held-out (test-split) standard-library files.
- ``greedy_identity``: does speculative greedy equal target greedy, prompt by prompt and k by k?
- ``sampling_histograms``: tokens drawn by speculative sampling vs by the target alone, with the
  total-variation distance between them and the noise floor of two target-only samples.
- ``pair_costs``: c (draft/target decode-step latency) and the verify cost of k+1 tokens, relative
  to one target step (the two numbers Leviathan's Thm 3.8 needs besides alpha).
- ``predict_speedup``: Thm 3.8 from measured alpha, c and verify cost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from .decoding import autoregressive_generate, speculative_generate
from .theory import walltime_speedup
from .timing import step_latency

__all__ = ["heldout_prompts", "greedy_identity", "sampling_histograms", "total_variation", "pair_costs", "predict_speedup"]


def heldout_prompts(tokenizer, n: int, length: int = 64, seed: int = 0, split: str = "test") -> list[torch.Tensor]:
    """``n`` prompts of ``length`` tokens, (1, length) each, cut at seeded offsets from distinct
    files of the zoo corpus's held-out ``split`` of the running interpreter's standard library."""
    import random

    from .zoo import list_stdlib_files, split_of, stdlib_dir

    if n < 1 or length < 1:
        raise ValueError(f"n and length must be >= 1; got n={n}, length={length}")
    root = stdlib_dir()
    files = [f for f in list_stdlib_files(root) if split_of(f) == split]
    random.Random(seed).shuffle(files)
    prompts = []
    for rel in files:
        try:
            ids = tokenizer((root / rel).read_text(encoding="utf-8"), verbose=False).input_ids  # whole files: no length warning
        except (UnicodeDecodeError, OSError):
            continue
        if len(ids) < 2 * length:
            continue
        start = random.Random(f"{seed}:{rel}").randrange(0, len(ids) - length)
        prompts.append(torch.tensor([ids[start : start + length]]))
        if len(prompts) == n:
            return prompts
    raise ValueError(f"only {len(prompts)} {split} files hold {2 * length}+ tokens; ask for fewer or shorter prompts")


def greedy_identity(target, draft, prompts: Sequence[torch.Tensor], ks: Iterable[int], max_new_tokens: int,
                    progress: bool = True) -> pd.DataFrame:
    """One row per (prompt, k): whether speculative greedy equals target greedy, and alpha."""
    rows = []
    ks = list(ks)
    for i, ids in enumerate(tqdm(prompts, desc="prompts", disable=not progress, leave=False)):
        reference = autoregressive_generate(target, ids, max_new_tokens).sequences
        for k in ks:
            out = speculative_generate(target, draft, ids, max_new_tokens, k=k)
            rows.append({"prompt": i, "k": k, "identical": bool(torch.equal(out.sequences, reference)),
                         "acceptance_rate": out.acceptance_rate, "mean_accepted_tokens": out.mean_accepted_tokens})
    return pd.DataFrame(rows)


def total_variation(a: Counter, b: Counter) -> float:
    """TV distance between two empirical distributions given as token counts."""
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[t] / na - b[t] / nb) for t in set(a) | set(b))


def sampling_histograms(target, draft, ids: torch.Tensor, *, runs: int, new_tokens: int, k: int,
                        temperature: float = 1.0, seed: int = 0, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw ``runs`` continuations by speculative sampling and 2 x ``runs`` by target-only sampling.

    Returns (counts, tv): ``counts`` has one row per (position, token, method) with its frequency;
    ``tv`` per position gives TV(speculative, target) and the noise floor TV(target half A,
    target half B) at the same sample size: if speculative sampling is exact, the two are alike."""
    gen = torch.Generator(device=target.device).manual_seed(seed)
    spec, ref_a, ref_b = [], [], []
    for _ in tqdm(range(runs), desc="sampling", disable=not progress, leave=False):
        spec.append(speculative_generate(target, draft, ids, new_tokens, k=k, do_sample=True, temperature=temperature,
                                         generator=gen).new_tokens.tolist())
        ref_a.append(autoregressive_generate(target, ids, new_tokens, do_sample=True, temperature=temperature,
                                             generator=gen).new_tokens.tolist())
        ref_b.append(autoregressive_generate(target, ids, new_tokens, do_sample=True, temperature=temperature,
                                             generator=gen).new_tokens.tolist())
    rows, tv = [], []
    for pos in range(new_tokens):
        counts = {name: Counter(s[pos] for s in samples if len(s) > pos)
                  for name, samples in (("speculative", spec), ("target", ref_a), ("target (2nd sample)", ref_b))}
        for name, c in counts.items():
            total = sum(c.values())
            rows += [{"position": pos + 1, "token": t, "method": name, "frequency": n / total} for t, n in c.items()]
        tv.append({"position": pos + 1, "tv_speculative_vs_target": total_variation(counts["speculative"], counts["target"]),
                   "tv_noise_floor": total_variation(counts["target (2nd sample)"], counts["target"])})
    return pd.DataFrame(rows), pd.DataFrame(tv)


def pair_costs(target, draft, *, context: int = 128, ks: Iterable[int] = (1, 2, 3, 4, 5, 6, 7),
               min_run_time: float = 0.5) -> pd.DataFrame:
    """Decode-step latencies of target and draft after ``context`` cached tokens, and the target's
    cost of scoring k+1 tokens at once. One row per k with c = t_draft / t_target and
    verify_cost = t_verify(k+1) / t_target."""
    t_target = step_latency(target, context=context, min_run_time=min_run_time)["median_s"]
    t_draft = step_latency(draft, context=context, min_run_time=min_run_time)["median_s"]
    rows = []
    for k in ks:
        t_verify = step_latency(target, context=context, tokens=k + 1, min_run_time=min_run_time)["median_s"]
        rows.append({"k": k, "target_step_s": t_target, "draft_step_s": t_draft, "verify_s": t_verify,
                     "c": t_draft / t_target, "verify_cost": t_verify / t_target})
    return pd.DataFrame(rows)


def predict_speedup(alpha: float, costs: pd.DataFrame) -> pd.DataFrame:
    """Thm 3.8 per k from measured alpha and ``pair_costs`` rows: the paper's form (verify = one
    target step) and the form with the measured verify cost."""
    out = costs.copy()
    out["alpha"] = alpha
    out["speedup_thm38"] = [walltime_speedup(alpha, int(k), c) for k, c in zip(out["k"], out["c"])]
    out["speedup_with_verify_cost"] = [walltime_speedup(alpha, int(k), c, v)
                                       for k, c, v in zip(out["k"], out["c"], out["verify_cost"])]
    return out
