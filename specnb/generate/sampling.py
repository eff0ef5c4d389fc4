"""Token choice and the acceptance rule of speculative sampling (Leviathan, Kalman & Matias 2023,
arXiv:2211.17192, Algorithm 1; Chen et al. 2023, arXiv:2302.01318, Algorithm 2).

- ``logits_to_probs``, ``sample``, ``next_token``: greedy argmax or a sample from softmax(logits / T)
- ``judge``: accept draft token x_i when r_i < p_i(x_i) / q_i(x_i) (greedy: target argmax == x_i)
- ``first_rejection``: accepted prefix length
- ``correct``: the target's token after n accepted drafts (a sample from norm(max(0, p - q)) after
  a rejection, from p after full acceptance; argmax when greedy)
- ``truncate_at_eos``: cut emitted tokens after the first end-of-sequence id
"""

from __future__ import annotations

import torch

__all__ = ["logits_to_probs", "sample", "next_token", "judge", "first_rejection", "correct", "truncate_at_eos"]


def logits_to_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / temperature) over the last axis."""
    return torch.softmax(logits / temperature, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of ``probs`` (..., V) → (...,)."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def next_token(logits: torch.Tensor, do_sample: bool, temperature: float, generator) -> int:
    """Greedy argmax, or a sample from softmax(logits / T), for logits of shape (V,)."""
    if not do_sample:
        return int(logits.argmax(-1))
    return int(sample(logits_to_probs(logits, temperature), generator))


def judge(drafts: torch.Tensor, q: torch.Tensor | None, logits: torch.Tensor, r: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Accept/reject each draft token scored so far: drafts (k,), logits (m, V) with m <= k → bool (m,).

    Greedy (q is None): accept when the target's argmax equals the draft token.
    Sampling: accept x_i when r_i < p_i(x_i) / q_i(x_i), with the uniforms r drawn once per
    iteration so parallel and sequential verification agree exactly."""
    m = logits.shape[0]
    d = drafts[:m].to(logits.device)
    if q is None:
        return logits.argmax(-1) == d
    p_x = logits_to_probs(logits, temperature).gather(1, d.view(m, 1))[:, 0]
    q_x = q[:m].to(logits.device).gather(1, d.view(m, 1))[:, 0]
    return r[:m] * q_x <= p_x


def first_rejection(ok: torch.Tensor) -> int:
    """Number of leading True values of a bool vector."""
    bad = (~ok).nonzero()
    return int(bad[0]) if bad.numel() else int(ok.shape[0])


def correct(logits_n: torch.Tensor, q_n: torch.Tensor | None, do_sample: bool, temperature: float, generator) -> int:
    """The target's token after n accepted drafts: argmax (greedy); after a rejection a sample from
    norm(max(0, p - q)); after full acceptance (q_n None) the bonus sample from p."""
    if not do_sample:
        return int(logits_n.argmax(-1))
    p = logits_to_probs(logits_n, temperature)
    if q_n is not None:
        residual = (p - q_n.to(p.device)).clamp_min(0)
        total = residual.sum()
        p = residual / total if total > 0 else p
    return int(sample(p, generator))


def truncate_at_eos(tokens: list[int], eos_token_id) -> tuple[list[int], bool]:
    """``tokens`` up to and including the first end-of-sequence id, and whether one was found."""
    if eos_token_id is None:
        return tokens, False
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1], True
    return tokens, False
