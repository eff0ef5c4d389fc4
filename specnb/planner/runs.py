"""Greedy acceptance without an i.i.d. alpha: where a draft agrees with the target, token by token.

Under greedy decoding the speculative output is the target's own greedy continuation x, and a
model draft proposes autoregressively from that same prefix. While its proposals match, the
draft's context *is* x, so its j-th proposal at an iteration that starts at position i is the
draft's argmax given x[:i + j]. One teacher-forced forward of the draft over x therefore gives
``match[p] = argmax draft(x[:p]) == x[p]`` for every position, and the tokens accepted by an
iteration starting at i are the run of matches from i, capped at k. Replaying the loop over
``match`` (``replay``) gives, for every k at once, the exact accepted and proposed counts of
``speculative_generate`` (same k cap at the tokens left): acceptance that comes in bursts is
kept, which the i.i.d. alpha of Leviathan et al. (Eq. 1) averages away.

- ``match_mask(target_seq, draft, prompt_length)``: the mask over generated positions.
- ``replay(match, k, max_new_tokens)``: accepted and proposed per iteration, target calls.
- ``tokens_per_iteration(masks, ks)``: pooled over prompts, per k (the planner's numerator).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..generate import judged_tokens

__all__ = ["match_mask", "replay", "replay_source", "replay_features", "tokens_per_iteration"]


@torch.inference_mode()
def match_mask(sequence: torch.Tensor, draft, prompt_length: int) -> np.ndarray:
    """(n_new,) bool for a greedy ``sequence`` (1, prompt + n_new) of the target: entry j says
    whether the draft's argmax given sequence[:prompt_length + j] is sequence[prompt_length + j].
    Entry 0 (the target's prefill token) is never drafted; it is False."""
    if sequence.ndim != 2 or sequence.shape[0] != 1:
        raise ValueError(f"sequence must be (1, length); got shape {tuple(sequence.shape)}")
    if not 1 <= prompt_length < sequence.shape[1]:
        raise ValueError(f"prompt_length must be in 1..{sequence.shape[1] - 1}; got {prompt_length}")
    logits = draft(sequence.to(draft.device)).logits[0]  # (L, V): row p predicts position p + 1
    guess = logits[prompt_length - 1:-1].argmax(-1).cpu()  # predictions of positions prompt_length .. L-1
    mask = (guess == sequence[0, prompt_length:].cpu()).numpy()
    mask[0] = False
    return mask


def replay(match: Sequence[bool], k: int, max_new_tokens: int | None = None) -> dict:
    """The greedy speculative loop replayed on ``match`` (``match_mask``): the first token comes
    from the prefill; each iteration proposes k' = min(k, tokens left - 1) tokens (a plain target
    step when k' = 0) and accepts the run of matches from its start, capped at k'. Returns
    accepted and proposed per iteration and target_calls (prefill included)."""
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    n = len(match) if max_new_tokens is None else int(max_new_tokens)
    if not 1 <= n <= len(match):
        raise ValueError(f"max_new_tokens must be in 1..{len(match)} (the mask's length); got {max_new_tokens}")
    new, calls, accepted, proposed = 1, 1, [], []
    while new < n:
        kk = min(int(k), n - new - 1)
        calls += 1
        if kk == 0:
            new += 1
            continue
        a = 0
        while a < kk and match[new + a]:
            a += 1
        accepted.append(a)
        proposed.append(kk)
        new += a + 1
    return {"accepted": accepted, "proposed": proposed, "target_calls": calls}


def tokens_per_iteration(masks: Iterable[Sequence[bool]], ks: Iterable[int]) -> pd.DataFrame:
    """Per k: iterations, accepted, proposed and judged draft tokens pooled over the prompts'
    masks, the acceptance rate (accepted / judged, as ``GenerationResult.acceptance_rate``) and
    the tokens emitted per drafting iteration ((accepted + iterations) / iterations), from ``replay``."""
    masks = [np.asarray(m, dtype=bool) for m in masks]
    if not masks:
        raise ValueError("masks is empty; pass one match_mask per calibration prompt")
    rows = []
    for k in ks:
        runs = [replay(m, k) for m in masks]
        acc = sum(sum(r["accepted"]) for r in runs)
        prop = sum(sum(r["proposed"]) for r in runs)
        iters = sum(len(r["accepted"]) for r in runs)
        judged = sum(judged_tokens(r["accepted"], r["proposed"]) for r in runs)
        rows.append({"k": int(k), "iterations": iters, "accepted": acc, "proposed": prop, "judged": judged,
                     "acceptance_rate": acc / judged if judged else float("nan"),
                     "tokens_per_iteration": (acc + iters) / iters if iters else float("nan")})
    return pd.DataFrame(rows)


def replay_source(sequence: torch.Tensor, source, prompt_length: int, k: int, max_new_tokens: int | None = None) -> dict:
    """``replay`` for a draft source that proposes from the sequence alone (``PromptLookupDraft``):
    each iteration asks ``source.propose`` for up to k' = min(k, tokens left - 1) tokens given the
    target's greedy prefix, a proposal of none is a plain target step, and the accepted run is the
    proposal's agreement with the target's next tokens. Same output as ``replay``."""
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    seq = sequence[0].tolist()
    total = len(seq) - prompt_length
    n = total if max_new_tokens is None else int(max_new_tokens)
    if not 1 <= n <= total:
        raise ValueError(f"max_new_tokens must be in 1..{total} (the tokens the sequence holds); got {max_new_tokens}")
    new, calls, accepted, proposed = 1, 1, [], []
    while new < n:
        kk = min(int(k), n - new - 1)
        calls += 1
        guess = source.propose(seq[: prompt_length + new], kk)[0].tolist() if kk > 0 else []
        if not guess:
            new += 1
            continue
        truth = seq[prompt_length + new: prompt_length + new + len(guess)]
        a = 0
        while a < len(guess) and guess[a] == truth[a]:
            a += 1
        accepted.append(a)
        proposed.append(len(guess))
        new += a + 1
    return {"accepted": accepted, "proposed": proposed, "target_calls": calls}


def replay_features(run: dict, k_max: int) -> np.ndarray:
    """One replayed prompt (``replay`` or ``replay_source``) as the counts its decode time is a sum
    over: [drafting iterations, plain target steps, proposed, accepted and judged draft tokens, then
    the number of iterations that proposed k' = 1 .. k_max tokens] (``planner.forecast`` prices them)."""
    proposed = np.asarray(run["proposed"], dtype=int)
    per_k = np.bincount(proposed, minlength=k_max + 1)[1: k_max + 1] if proposed.size else np.zeros(k_max, int)
    plain = run["target_calls"] - 1 - len(proposed)
    judged = judged_tokens(run["accepted"], run["proposed"])
    return np.concatenate([[len(proposed), plain, proposed.sum(), sum(run["accepted"]), judged], per_k]).astype(float)
