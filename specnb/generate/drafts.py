"""Draft sources: where the speculative loop gets its k proposals. Any object with

- ``prefill(prompt (1, P))``: see the prompt before the first proposal;
- ``propose(seq, k) -> (tokens (k,), q (k, V) or None)``: k tokens continuing ``seq`` (a list of
  ids), with the draft distribution of each when sampling (None when greedy);
- ``accept(n, length)``: n of the last proposal were accepted after ``length`` tokens;
- ``calls``: forwards run so far (prefill included);

plugs into ``speculative_decode``. ``ModelDraft`` is a smaller causal LM behind a step
(``specnb.generate.steps``), i.e. Leviathan et al. 2023's M_q.
"""

from __future__ import annotations

import torch

from .sampling import logits_to_probs, sample

__all__ = ["ModelDraft"]


class ModelDraft:
    """Draft tokens autoregressively from a model through its step. ``valid`` counts the tokens of
    ``seq`` whose KV the cache holds; a proposal first feeds the 1 or 2 tokens of ``seq`` it lacks
    (2 after a fully accepted iteration, whose last draft token was never fed), then its own."""

    def __init__(self, step, *, do_sample: bool, temperature: float, generator: torch.Generator | None):
        self.step, self.do_sample, self.temperature, self.generator = step, do_sample, temperature, generator
        self.valid, self.calls = 0, 0

    def prefill(self, prompt: torch.Tensor) -> None:
        self.step(prompt, 0, last_only=True)
        self.valid, self.calls = prompt.shape[1], self.calls + 1

    def propose(self, seq: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = self.step.model.device
        pos = min(self.valid, len(seq) - 1)
        pending = torch.tensor([seq[pos:]], device=device)  # (1, 1 or 2)
        tokens, probs = [], []
        for _ in range(k):
            logits = self.step(pending, pos, last_only=True)[-1]  # (V,)
            pos += pending.shape[1]
            if self.do_sample:
                q = logits_to_probs(logits, self.temperature)
                tok = sample(q, self.generator)
                probs.append(q)
            else:
                tok = logits.argmax(-1)
            tokens.append(tok)
            pending = tok.view(1, 1)
        self.valid, self.calls = pos, self.calls + k  # seq + the first k-1 proposals
        return torch.stack(tokens), (torch.stack(probs) if self.do_sample else None)

    def accept(self, n: int, length: int) -> None:
        self.valid = min(self.valid, length + n)
