"""Measurements the notebooks run, returning tidy rows (one concern: turning models into numbers).

- ``heldout_prompts``: prompts cut from held-out (test-split) standard-library files.
- ``greedy_identity``: does speculative greedy equal target greedy, prompt by prompt and k by k?
- ``sampling_histograms``: tokens drawn by speculative sampling vs by the target alone, with the
  total-variation distance between them and the noise floor of two target-only samples.
- ``pair_costs``: c (draft/target decode-step latency) and the verify cost of k+1 tokens, relative
  to one target step (the two numbers Leviathan's Thm 3.8 needs besides alpha).
- ``predict_speedup``: Thm 3.8 from measured alpha, c and verify cost.
- ``corpus_tokens``: tokens of one split of the zoo corpus, rebuilt from the standard library.
- ``draft_quality``: teacher-forced held-out loss, perplexity and accuracy of each draft, with two
  acceptance predictors against the target: top-1 agreement and E[sum_x min(p(x), q(x))].
- ``acceptance``: alpha and tau of each draft with the target, pooled over prompts, greedy (replayed
  on the target's own text by default) or sampled.
- ``sps_vs_asg``: specnb's speculative decoding against Hugging Face assisted generation on the
  same pairs and k, interleaved, with a profile of where each spends its time (``forward_profile``).
- ``correlate``: Pearson and Spearman coefficients with bootstrap confidence intervals.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .generate import assisted_generate, autoregressive_generate, judged_tokens, speculative_generate
from .generate.theory import walltime_speedup
from .planner.runs import match_mask, replay as replay_loop
from .stats import distinct_ngram_ratio, pooled_alpha
from .timing import compare, forward_share, over_prompts, step_latencies, summarize
from .corpus import corpus_tokens, heldout_prompts, heldout_windows

__all__ = ["format_correlation", "heldout_prompts", "greedy_identity", "sampling_histograms", "total_variation", "pair_costs", "predict_speedup",
           "corpus_tokens", "heldout_windows", "draft_quality", "acceptance", "sps_vs_asg", "forward_profile", "correlate"]


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
               min_run_time: float = 0.2, rounds: int = 5) -> pd.DataFrame:
    """Decode-step latencies of target and draft after ``context`` cached tokens, and the target's
    cost of scoring k+1 tokens at once. One row per k with c = t_draft / t_target and
    verify_cost = t_verify(k+1) / t_target. All steps are timed interleaved in ``rounds`` rotated
    rounds (``timing.step_latencies``) and each ratio is the median of its per-round ratios, so a
    slow spell of the machine cannot land on the target's step alone (timed in sequence, a verify
    of 5 tokens once came out cheaper than one 1-token step)."""
    ks = list(ks)
    entries = {"target": (target, 1), "draft": (draft, 1), **{f"verify {k + 1}": (target, k + 1) for k in ks}}
    raw = step_latencies(entries, context=context, rounds=rounds, min_run_time=min_run_time, progress=False, per_round=True)
    per = raw.pivot(index="round", columns="model", values="median_s")
    rows = []
    for k in ks:
        rows.append({"k": k, "target_step_s": per["target"].median(), "draft_step_s": per["draft"].median(),
                     "verify_s": per[f"verify {k + 1}"].median(), "c": (per["draft"] / per["target"]).median(),
                     "verify_cost": (per[f"verify {k + 1}"] / per["target"]).median()})
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


@torch.inference_mode()
def _logits(model, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([model(input_ids=x[i:i + batch].to(model.device)).logits.float().cpu() for i in range(0, len(x), batch)])


@torch.inference_mode()
def draft_quality(target, drafts: dict, tokens: np.ndarray, *, seq_len: int = 256, max_tokens: int = 8192,
                  temperature: float = 1.0, batch: int = 4, progress: bool = True) -> pd.DataFrame:
    """Teacher-forced quality of each draft on held-out ``tokens``, one row per draft (and the target).

    Columns: loss (nats/token), perplexity, accuracy (next-token top-1), and two predictors of
    acceptance measured against the target at the same positions:

    - ``top1_agreement``: argmax q == argmax p, the greedy acceptance of a one-token draft;
    - ``expected_alpha``: mean over positions of beta = sum_x min(p(x), q(x)) at ``temperature``,
      Leviathan et al. (2023) Definition 3.2 / Corollary 3.6: the acceptance rate of speculative
      sampling is alpha = E[beta].

    An EAGLE draft (``specnb.eagle``) is scored on positions 1..T-1, fed the target's features.
    """
    if not drafts:
        raise ValueError("draft_quality needs at least one draft: pass {name: model}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for expected_alpha; got {temperature}")
    windows = heldout_windows(tokens, seq_len=seq_len, max_tokens=max_tokens)
    x, y = windows[:, :-1], windows[:, 1:]
    p_logits = _logits(target, x, batch)  # (n, T, V)
    p = torch.softmax(p_logits / temperature, -1)
    rows = []
    for name, model in tqdm({"target": target, **drafts}.items(), desc="quality", disable=not progress, leave=False):
        if callable(getattr(model, "as_source", None)):  # EAGLE: position t needs the target's feature of t - 1
            q_logits, at = _eagle_logits(target, model, x, batch), slice(1, None)
        else:
            q_logits, at = (p_logits if model is target else _logits(model, x, batch)), slice(None)
        yt, pt, pl = y[:, at], p[:, at], p_logits[:, at]
        loss = torch.nn.functional.cross_entropy(q_logits.flatten(0, 1), yt.flatten()).item()
        q = torch.softmax(q_logits / temperature, -1)
        rows.append({"model": name, "tokens": yt.numel(), "loss": loss, "perplexity": float(np.exp(loss)),
                     "accuracy": (q_logits.argmax(-1) == yt).float().mean().item(),
                     "top1_agreement": (q_logits.argmax(-1) == pl.argmax(-1)).float().mean().item(),
                     "expected_alpha": torch.minimum(pt, q).sum(-1).mean().item()})
    return pd.DataFrame(rows)


@torch.inference_mode()
def _eagle_logits(target, draft, x: torch.Tensor, batch: int) -> torch.Tensor:
    """An EAGLE draft's teacher-forced logits of positions 1..T-1 of ``x`` (n, T): from the
    target's feature of the position before and that position's token."""
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(target.device)
        f = target.model(input_ids=xb).last_hidden_state  # (b, T, H)
        out.append(draft.logits(draft.features(xb[:, 1:], f[:, :-1].to(draft.dtype))).float().cpu())
    return torch.cat(out)  # (n, T-1, V)


def acceptance(target, drafts: dict, prompts: Sequence[torch.Tensor], *, k: int, new_tokens: int,
               do_sample: bool = False, temperature: float = 1.0, seed: int = 0, replay: bool = True,
               progress: bool = True) -> pd.DataFrame:
    """alpha and tau of every draft against the target at draft length ``k``, one row per draft.

    alpha = accepted / judged draft tokens pooled over ``prompts`` (a draft token is judged when
    every token before it in its block was accepted: the MLE of Leviathan et al.'s i.i.d. alpha,
    as ``GenerationResult.acceptance_rate``); tau = mean tokens per target verification
    (accepted + 1). Sampled runs (``do_sample``) use one seeded generator per draft.
    ``alpha_low`` / ``alpha_high``: ``stats.pooled_alpha``'s 95% CI over prompts (nan below 2 prompts);
    ``distinct4``: the mean distinct-4-gram ratio of the outputs (greedy: the target's own text).

    Greedy with ``replay`` (the default): the target decodes each prompt once, and each draft's
    iterations are replayed on its teacher-forced agreement with that text (``planner.runs.replay``),
    which gives the accepted and proposed counts of ``speculative_generate`` exactly, with one
    forward per draft and prompt instead of a decode. ``replay=False`` runs the loop itself.
    """
    if not drafts:
        raise ValueError("acceptance needs at least one draft: pass {name: model}")
    if not do_sample and replay:
        return _replayed_acceptance(target, drafts, prompts, k=k, new_tokens=new_tokens, progress=progress)
    counts = {}
    for name, draft in tqdm(drafts.items(), desc="acceptance", disable=not progress, leave=False):
        gen = torch.Generator(device=target.device).manual_seed(seed) if do_sample else None
        counts[name] = []
        for ids in prompts:
            out = speculative_generate(target, draft, ids, new_tokens, k=k, do_sample=do_sample,
                                       temperature=temperature, generator=gen)
            counts[name].append((out.accepted, out.proposed, out.new_tokens.tolist()))
    return _acceptance_rows(counts, k, do_sample, len(prompts))


def _replayed_acceptance(target, drafts: dict, prompts, *, k: int, new_tokens: int, progress: bool) -> pd.DataFrame:
    """Greedy ``acceptance`` by replay: one target decode per prompt, one draft forward per (draft, prompt)."""
    counts = {name: [] for name in drafts}
    for ids in tqdm(prompts, desc="acceptance (replayed)", disable=not progress, leave=False):
        out = autoregressive_generate(target, ids, new_tokens)
        for name, draft in drafts.items():
            if not isinstance(draft, torch.nn.Module):
                raise ValueError(f"draft {name!r} is not a model; replay needs one (pass replay=False for a draft source)")
            run = replay_loop(match_mask(out.sequences, draft, ids.shape[1]), k, out.num_new_tokens)
            counts[name].append((run["accepted"], run["proposed"], out.new_tokens.tolist()))
    return _acceptance_rows(counts, k, False, len(prompts))


def _acceptance_rows(counts: dict, k: int, sampled: bool, n_prompts: int) -> pd.DataFrame:
    """One ``acceptance`` row per draft from {name: [(accepted, proposed, new tokens) per prompt]}."""
    rows = []
    for name, per_prompt in counts.items():
        acc = [sum(a) for a, _, _ in per_prompt]
        judged = [judged_tokens(a, p) for a, p, _ in per_prompt]
        iters = [len(a) for a, _, _ in per_prompt]
        d4 = [distinct_ngram_ratio(t, 4) for _, _, t in per_prompt]
        a, j, it = sum(acc), sum(judged), sum(iters)
        ci = pooled_alpha(pd.DataFrame({"method": name, "prompt": range(len(acc)), "accepted": acc, "judged": judged}), name)
        rows.append({"model": name, "k": k, "sampled": sampled, "alpha": a / j if j else float("nan"), "alpha_low": ci["alpha_low"],
                     "alpha_high": ci["alpha_high"], "tau": (a + it) / it if it else float("nan"), "judged": j, "iterations": it,
                     "prompts": n_prompts, "distinct4": float(np.nanmean(d4))})
    return pd.DataFrame(rows)


def sps_vs_asg(target, pairs: dict, prompts: Sequence[torch.Tensor], *, new_tokens: int, repeats: int = 5,
               progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """specnb (SpS, ``speculative_generate``) vs Hugging Face (AsG, ``assisted_generate``: constant k,
    confidence threshold off) for every ``{name: (draft, k)}``, greedy, each call decoding all
    ``prompts``; target greedy and every method run interleaved in one ``timing.compare``.

    Returns (speedups, profile): one row per (draft, implementation) with the median paired ratio
    of decode tokens/s to target greedy and its quartiles, alpha and tokens/s; and one row per
    (draft, implementation) of ``timing.forward_share`` on the first prompt: seconds inside the
    target's and the draft's forwards and outside them (the loop), with the outside share."""
    if not pairs:
        raise ValueError("sps_vs_asg needs at least one pair: {name: (draft, k)}")
    impls = {"SpS": speculative_generate, "AsG": assisted_generate}
    methods = over_prompts({"target greedy": lambda p: autoregressive_generate(target, p, new_tokens)}, prompts)
    for name, (draft, k) in pairs.items():
        for label, fn in impls.items():
            methods |= over_prompts({f"{name} {label}": lambda p, fn=fn, draft=draft, k=k: fn(target, draft, p, new_tokens, k=k)},
                                    prompts, k)
    runs = compare(methods, repeats=repeats, progress=progress, device=target.device)
    table = summarize(runs, baseline="target greedy").set_index("method")
    rows = []
    for name, (draft, k) in pairs.items():
        for label, fn in impls.items():
            t = table.loc[f"{name} {label}"]
            rows.append({"draft": name, "implementation": label, "k": k, "speedup": t["ratio_vs_target greedy"],
                         "speedup_q25": t["ratio_q25"], "speedup_q75": t["ratio_q75"],
                         "tokens_per_second": t["tokens_per_second_median"], "acceptance_rate": t.get("acceptance_rate_median"),
                         "baseline_tokens_per_second": table.loc["target greedy", "tokens_per_second_median"], "repeats": repeats})
    return pd.DataFrame(rows), forward_profile(target, pairs, prompts[0], new_tokens=new_tokens)


def forward_profile(target, pairs: dict, prompt: torch.Tensor, *, new_tokens: int) -> pd.DataFrame:
    """Where one greedy call of SpS (``speculative_generate``) and of AsG (``assisted_generate``)
    spends its time, for every ``{name: (draft, k)}`` on ``prompt``: one row per (draft,
    implementation) of ``timing.forward_share`` (seconds inside the target's and the draft's
    forwards and outside them, the loop, with the outside share)."""
    if not pairs:
        raise ValueError("forward_profile needs at least one pair: {name: (draft, k)}")
    rows = []
    for name, (draft, k) in pairs.items():
        for label, fn in (("SpS", speculative_generate), ("AsG", assisted_generate)):
            share = forward_share(lambda fn=fn, draft=draft, k=k: fn(target, draft, prompt, new_tokens, k=k),
                                  {"target": target, "draft": draft}, device=target.device)
            rows.append({"draft": name, "implementation": label, "k": k, **share})
    return pd.DataFrame(rows)


def correlate(frame: pd.DataFrame, predictors: Sequence[str], outcome: str, *, n_resamples: int = 2000,
              confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Pearson and Spearman correlation of each predictor with ``outcome``, with percentile bootstrap
    confidence intervals over rows (``scipy.stats.bootstrap``, paired resampling). One row per
    (predictor, method)."""
    from scipy import stats

    missing = [c for c in [*predictors, outcome] if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the frame; it has {list(frame.columns)}")
    data = frame[[*predictors, outcome]].dropna()
    if len(data) < 4:
        raise ValueError(f"need >= 4 complete rows to correlate; got {len(data)}")
    methods = {"pearson": lambda a, b: stats.pearsonr(a, b)[0], "spearman": lambda a, b: stats.spearmanr(a, b)[0]}
    rows = []
    for pred in predictors:
        a, b = data[pred].to_numpy(float), data[outcome].to_numpy(float)
        for method, fn in methods.items():
            with warnings.catch_warnings():  # a resample may repeat one row: r is then undefined (nan), not an error
                warnings.simplefilter("ignore", stats.ConstantInputWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                boot = stats.bootstrap((a, b), fn, paired=True, vectorized=False, n_resamples=n_resamples,
                                   confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
            rows.append({"predictor": pred, "outcome": outcome, "method": method, "r": fn(a, b), "n": len(a),
                         "ci_low": boot.confidence_interval.low, "ci_high": boot.confidence_interval.high})
    return pd.DataFrame(rows)


def format_correlation(corr: pd.DataFrame, predictor: str, outcome: str = "alpha_greedy", method: str = "spearman") -> str:
    """One row of a ``correlate`` table as text: ``"+0.94 [+0.73, +1.00]"`` (r and its CI)."""
    hit = corr[(corr["predictor"] == predictor) & (corr["outcome"] == outcome) & (corr["method"] == method)]
    if len(hit) != 1:
        raise ValueError(f"no single {method} row for predictor {predictor!r} and outcome {outcome!r} in the correlate table")
    r = hit.iloc[0]
    return f"{r['r']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
