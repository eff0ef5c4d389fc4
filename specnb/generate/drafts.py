"""Draft sources: where the speculative loop gets its k proposals. Any object with

- ``prefill(prompt (1, P))``: see the prompt before the first proposal;
- ``propose(seq, k) -> (tokens (k',), q (k', V) or None)``: up to k tokens continuing ``seq`` (a
  list of ids), with the draft distribution of each when sampling; None when greedy or when the
  proposal is deterministic (the loop then judges it as a point mass); k' = 0 means "no proposal",
  and the loop takes a plain target step;
- ``accept(n, length)``: n of the last proposal were accepted after ``length`` tokens;
- ``calls``: forwards run so far (prefill included);

plugs into ``speculative_decode``; ``speculative_generate(target, draft=source)`` takes one as well
as a model.

- ``ModelDraft``: a smaller causal LM behind a step (``specnb.generate.steps``), i.e. Leviathan et
  al. 2023's M_q.
- ``PromptLookupDraft``: no model. The continuation of the last n-gram's earliest earlier match in
  prompt + output (Saxena 2023, "Prompt Lookup Decoding"; Hugging Face's
  ``PromptLookupCandidateGenerator``, ``generate(prompt_lookup_num_tokens=...)``, same rule).
- ``HybridDraft(model)``: prompt lookup where an n-gram matches, the model draft where none does.
  A source with a ``model`` and ``bind(step, do_sample=, temperature=, generator=, source=)`` is
  given the model's step by ``speculative_generate``, or the model's own source when it builds one
  (``HybridDraft(EagleDraft)``).
"""

from __future__ import annotations

import torch

from .sampling import logits_to_probs, sample

__all__ = ["ModelDraft", "PromptLookupDraft", "HybridDraft", "is_draft_source", "builds_source"]


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


def builds_source(obj) -> bool:
    """Whether ``obj`` is a module that builds its own draft source from the target
    (``as_source(target, ...)``, e.g. ``specnb.eagle.EagleDraft``) rather than a causal LM."""
    return isinstance(obj, torch.nn.Module) and callable(getattr(obj, "as_source", None))


def is_draft_source(obj) -> bool:
    """Whether ``obj`` is a draft source (``prefill``, ``propose``, ``accept``) rather than a model."""
    return not isinstance(obj, torch.nn.Module) and all(callable(getattr(obj, m, None)) for m in ("prefill", "propose", "accept"))


class PromptLookupDraft:
    """Draft-free proposals: the longest suffix of ``seq`` of n <= ``max_ngram`` tokens that occurs
    earlier in ``seq`` (n >= ``min_ngram``), and the up to k tokens that followed it there.
    ``pick`` says which earlier occurrence: "first" (the leftmost: Hugging Face's
    PromptLookupCandidateGenerator, whose defaults are max_ngram = 2, min_ngram = 1) or "last" (the
    most recent). With a large ``max_ngram``, "last" takes the occurrence whose context agrees
    longest with the sequence's end. No match: no proposal. Deterministic, so under sampling each
    token is judged as a point mass (accepted with probability p(x); Leviathan et al.'s rule with
    q = 1 at x). Which rule pays depends on the verification's cost: ``planner.calibrate`` predicts
    each rule's speedup from the target's greedy text and this machine's costs."""

    name = "prompt-lookup"
    calls = 0  # no forwards
    PICKS = ("first", "last")

    def __init__(self, max_ngram: int = 2, min_ngram: int = 1, pick: str = "first"):
        if isinstance(max_ngram, bool) or not isinstance(max_ngram, int) or max_ngram < 1:
            raise ValueError(f"max_ngram must be an integer >= 1; got {max_ngram!r} (Hugging Face's default is 2)")
        if isinstance(min_ngram, bool) or not isinstance(min_ngram, int) or not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"min_ngram must be an integer in 1..max_ngram={max_ngram}; got {min_ngram!r}")
        if pick not in self.PICKS:
            raise ValueError(f"pick must be one of {self.PICKS} (the leftmost or the most recent match); got {pick!r}")
        self.max_ngram, self.min_ngram, self.pick = max_ngram, min_ngram, pick

    def __repr__(self) -> str:
        return f"PromptLookupDraft(max_ngram={self.max_ngram}, min_ngram={self.min_ngram}, pick={self.pick!r})"

    def prefill(self, prompt: torch.Tensor) -> None:
        pass

    def propose(self, seq: list[int], k: int) -> tuple[torch.Tensor, None]:
        ids = torch.tensor(seq)
        ends = torch.arange(len(seq) - 1)  # j: an earlier n-gram ending at j, continued from j + 1
        found = None
        for n in range(1, min(self.max_ngram, len(seq) - 1) + 1):
            ends = ends[ends >= n - 1]
            ends = ends[ids[ends - (n - 1)] == ids[-n]]  # the n-grams ending at ends equal the last n tokens
            if ends.numel() == 0:
                break
            if n >= self.min_ngram:
                found = ends
        if found is None:
            return ids[:0], None
        start = int(found[0] if self.pick == "first" else found[-1]) + 1
        return ids[start : start + k], None

    def accept(self, n: int, length: int) -> None:
        pass


class HybridDraft:
    """Prompt lookup first (``PromptLookupDraft(max_ngram, min_ngram, pick)``); where no n-gram
    matches, ``model`` drafts (a ``ModelDraft`` on the step ``speculative_generate`` binds). Each
    iteration's proposal is judged as what it is: a point mass for a looked-up token, the model's q
    for a drafted one, so greedy output stays the target's and sampling stays exact.
    ``looked_up`` / ``drafted``: iterations each side served."""

    name = "hybrid"

    def __init__(self, model, max_ngram: int = 2, min_ngram: int = 1, pick: str = "first"):
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"HybridDraft needs a draft model (a torch module) for the iterations lookup cannot serve; got {type(model).__name__}")
        self.model, self.lookup, self.inner = model, PromptLookupDraft(max_ngram, min_ngram, pick), None
        self.looked_up = self.drafted = 0

    @property
    def calls(self) -> int:
        return self.inner.calls if self.inner is not None else 0

    def bind(self, step, *, do_sample: bool, temperature: float, generator: torch.Generator | None, source=None) -> None:
        """Draft with ``ModelDraft(step)``, or with ``source`` when the model builds its own
        (``EagleDraft.as_source``: it sees every target forward, looked-up iterations included)."""
        self.inner = source if source is not None else ModelDraft(step, do_sample=do_sample, temperature=temperature,
                                                                  generator=generator)
        self.looked_up = self.drafted = 0

    def prefill(self, prompt: torch.Tensor) -> None:
        if self.inner is None:
            raise ValueError("HybridDraft has no model step yet; pass it to speculative_generate, which binds one")
        self.inner.prefill(prompt)

    def propose(self, seq: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens, _ = self.lookup.propose(seq, k)
        if tokens.numel():
            self.looked_up += 1
            return tokens, None
        self.drafted += 1
        return self.inner.propose(seq, k)  # feeds every token of seq its cache lacks, then drafts

    def accept(self, n: int, length: int) -> None:
        self.inner.accept(n, length)
