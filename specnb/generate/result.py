"""``GenerationResult``: what every decoding loop returns, and the statistics read from it.

- ``judged_tokens(accepted, proposed)``: draft tokens the target judged (the denominator of alpha).
- ``GenerationResult``: tokens, per-iteration acceptance, call counts, seconds, TTFT; derived
  throughput (decode tokens/s with TTFT excluded), tau and alpha (Leviathan et al. 2023,
  arXiv:2211.17192, Sec. 3: alpha is the acceptance rate, tau the tokens per target forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["GenerationResult", "judged_tokens"]


def judged_tokens(accepted: Sequence[int], proposed: Sequence[int]) -> int:
    """Draft tokens the target judged: per iteration the accepted ones plus the first rejected one
    (none when all were accepted). accepted / judged is the maximum-likelihood alpha under
    Leviathan et al.'s i.i.d. assumption, unbiased by iterations shortened at ``max_new_tokens``."""
    return sum(a + (a < p) for a, p in zip(accepted, proposed))


@dataclass(kw_only=True)
class GenerationResult:
    """What every decoding loop returns (build it by keyword).

    ``accepted[i]`` is the number of draft tokens accepted in iteration i and ``proposed[i]`` the
    number the draft proposed (k, or fewer near ``max_new_tokens``). Autoregressive decoding has no
    iterations (both lists empty). ``sources`` says where each new token came from: "target"
    (prefill or a plain target step), "draft" (accepted), "correction" (the target's token after
    a rejection) or "bonus" (the target's token after full acceptance); empty for assisted.
    ``compile_seconds``: time this call spent compiling steps before its clock started.
    """

    sequences: torch.Tensor  # (1, prompt_len + new_tokens)
    prompt_length: int
    method: str
    k: int | str | None = None  # int k, or a schedule's name (``speculative_generate(k=schedule)``)
    accepted: list[int] = field(default_factory=list)
    proposed: list[int] = field(default_factory=list)
    target_calls: int = 0
    draft_calls: int = 0
    seconds: float = float("nan")
    ttft_seconds: float = float("nan")
    sources: list[str] = field(default_factory=list)
    ttft_tokens: int = 1  # new tokens out by the TTFT mark (HF assisted: its first target forward also verifies)
    compile_seconds: float = 0.0

    @property
    def new_tokens(self) -> torch.Tensor:
        """The generated tokens only, shape (new_tokens,)."""
        return self.sequences[0, self.prompt_length :]

    @property
    def num_new_tokens(self) -> int:
        return int(self.sequences.shape[1] - self.prompt_length)

    @property
    def decode_tokens(self) -> int:
        """New tokens emitted after the TTFT mark (the tokens ``tokens_per_second`` counts)."""
        return max(0, self.num_new_tokens - self.ttft_tokens)

    @property
    def tokens_per_second(self) -> float:
        """Decode throughput: tokens emitted after the TTFT mark over the time after it (TTFT excluded).

        Usually every token after the first; for HF assisted generation, whose first target forward
        is prefill *and* verification of the first draft block, every token after that forward's."""
        decode_s = self.seconds - self.ttft_seconds
        if self.decode_tokens < 1 or not decode_s > 0:
            return float("nan")
        return self.decode_tokens / decode_s

    @property
    def end_to_end_tokens_per_second(self) -> float:
        """All new tokens over the whole call (TTFT included)."""
        return self.num_new_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def mean_accepted_tokens(self) -> float:
        """tau: tokens emitted per target forward (1.0 for autoregressive decoding)."""
        return self.num_new_tokens / self.target_calls if self.target_calls else float("nan")

    @property
    def acceptance_rate(self) -> float:
        """alpha estimate: accepted draft tokens / draft tokens judged (``judged_tokens``)."""
        judged = judged_tokens(self.accepted, self.proposed)
        return sum(self.accepted) / judged if judged else float("nan")

    @property
    def per_position_acceptance(self) -> list[float]:
        """P(draft token j accepted | tokens 1..j-1 accepted), for j = 1..k."""
        k = max(self.proposed, default=0)
        rates = []
        for j in range(1, k + 1):
            reached = [a for a, p in zip(self.accepted, self.proposed) if a >= j - 1 and p >= j]
            rates.append(sum(a >= j for a in reached) / len(reached) if reached else float("nan"))
        return rates

    def summary(self) -> dict:
        """A flat dict of the statistics (one row of a results table)."""
        return {
            "method": self.method,
            "k": self.k,
            "new_tokens": self.num_new_tokens,
            "seconds": self.seconds,
            "ttft_seconds": self.ttft_seconds,
            "tokens_per_second": self.tokens_per_second,
            "end_to_end_tokens_per_second": self.end_to_end_tokens_per_second,
            "target_calls": self.target_calls,
            "draft_calls": self.draft_calls,
            "mean_accepted_tokens": self.mean_accepted_tokens,
            "acceptance_rate": self.acceptance_rate,
            "compile_seconds": self.compile_seconds,
        }
