"""Decoding loops for Hugging Face causal LMs at batch size 1: autoregressive, speculative, assisted.

- ``autoregressive_generate``: the baseline, one target forward per token (KV cache).
- ``speculative_generate``: Leviathan, Kalman & Matias 2023 (arXiv:2211.17192), Algorithm 1.
  The draft proposes k tokens with its own KV cache; the target scores all of them in ONE forward
  (``verify="parallel"``); greedy keeps the longest agreeing prefix, sampling accepts token i with
  probability min(1, p_i/q_i) and on rejection samples from norm(max(0, p - q)). Every iteration
  emits one target token (correction or bonus). ``verify="sequential"`` is seed 002's pitfall: the
  same tokens, one target forward per draft token.
- ``assisted_generate``: Hugging Face ``generate(assistant_model=draft)`` with a constant k and the
  confidence threshold off, wrapped to return the same statistics.

All three return a ``GenerationResult``. Shapes: ``input_ids`` is (1, prompt_len);
``sequences`` is (1, prompt_len + new_tokens), like ``model.generate``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import logging
import operator

import torch
from transformers import DynamicCache, GenerationConfig, StoppingCriteria, StoppingCriteriaList

from .schedules import ConstantK, KSchedule, as_schedule

__all__ = [
    "GenerationResult",
    "autoregressive_generate",
    "speculative_generate",
    "assisted_generate",
]



class _DropInternalAssistantWarning(logging.Filter):
    """HF's own assistant loop passes a generation_config plus kwargs to ``generate`` and then warns
    about it; the warning is about HF internals, not about anything a caller can change."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Passing `generation_config` together with generation-related" not in record.getMessage()


logging.getLogger("transformers.generation.utils").addFilter(_DropInternalAssistantWarning())


# --------------------------------------------------------------------------------------------
# Result type
# --------------------------------------------------------------------------------------------


@dataclass
class GenerationResult:
    """What every decoding loop returns.

    ``accepted[i]`` is the number of draft tokens accepted in iteration i and ``proposed[i]`` the
    number the draft proposed (k, or fewer near ``max_new_tokens``). Autoregressive decoding has no
    iterations (both lists empty). ``sources`` says where each new token came from: "target"
    (prefill or a plain target step), "draft" (accepted), "correction" (the target's token after
    a rejection) or "bonus" (the target's token after full acceptance); empty for assisted.
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
        """alpha estimate: accepted draft tokens / draft tokens judged.

        In each iteration the target judges the accepted tokens plus the first rejected one (none
        if all were accepted): the maximum-likelihood estimate of alpha under Leviathan et al.'s
        i.i.d. assumption, unbiased by iterations shortened at ``max_new_tokens``.
        """
        judged = sum(a + (a < p) for a, p in zip(self.accepted, self.proposed))
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
        }


# --------------------------------------------------------------------------------------------
# Validation: every check runs before any forward pass
# --------------------------------------------------------------------------------------------


def _vocab_size(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and hasattr(head, "out_features"):
        return int(head.out_features)
    return int(model.config.vocab_size)


def _max_positions(model) -> int | None:
    cfg = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_model(model, role: str) -> None:
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise ValueError(f"{role} must be a Hugging Face causal LM (a PreTrainedModel); got {type(model).__name__}")
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"{role} is an encoder-decoder model; speculative decoding here needs a decoder-only causal LM")
    supports = getattr(type(model), "_supports_default_dynamic_cache", None)
    if supports is None or not supports() or not hasattr(model, "get_output_embeddings"):
        raise ValueError(
            f"{role} ({type(model).__name__}) has no usable KV cache that can be cropped (DynamicCache); "
            "use a decoder-only transformer such as Llama, GPT-2, GPT-NeoX, OPT or Qwen2"
        )


def _validate(target, draft, input_ids, max_new_tokens, k, do_sample, temperature, verify="parallel"):
    _check_model(target, "target")
    if draft is not None:
        _check_model(draft, "draft")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int, torch.int32):
        raise ValueError("input_ids must be an integer torch.Tensor of shape (1, prompt_len), e.g. tokenizer(..., return_tensors='pt').input_ids")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (1, prompt_len); got {tuple(input_ids.shape)} (add a batch dimension with input_ids[None])")
    if input_ids.shape[0] != 1:
        raise ValueError(f"batch size must be 1; got {input_ids.shape[0]} prompts (loop over prompts one at a time)")
    if input_ids.shape[1] < 1:
        raise ValueError("the prompt is empty; give at least one token (e.g. the BOS token)")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}")
    if k is not None and (not isinstance(k, int) or k < 1):
        raise ValueError(f"k (draft tokens per iteration) must be an integer >= 1; got {k!r}")
    if do_sample and not (temperature > 0):
        raise ValueError(f"temperature must be > 0 when do_sample=True; got {temperature!r} (use do_sample=False for greedy)")
    if verify not in ("parallel", "sequential"):
        raise ValueError(f"verify must be 'parallel' or 'sequential'; got {verify!r}")
    vocab = _vocab_size(target)
    if draft is not None and _vocab_size(draft) != vocab:
        raise ValueError(
            f"draft and target vocabularies differ ({_vocab_size(draft)} vs {vocab} logits); "
            "use a draft from the same family/tokenizer as the target"
        )
    if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab:
        raise ValueError(f"input_ids hold token ids outside the vocabulary [0, {vocab}); tokenize with the model's own tokenizer")
    total = input_ids.shape[1] + max_new_tokens
    for model, role in ((target, "target"), (draft, "draft")):
        limit = _max_positions(model) if model is not None else None
        if limit is not None and total > limit:
            raise ValueError(
                f"prompt ({input_ids.shape[1]}) + max_new_tokens ({max_new_tokens}) = {total} exceeds the {role}'s "
                f"{limit} positions; shorten the prompt or lower max_new_tokens"
            )


# --------------------------------------------------------------------------------------------
# Small flat helpers
# --------------------------------------------------------------------------------------------


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued GPU work so a timestamp means what it says (no-op on CPU). ``None`` syncs
    every CUDA device this process has used (so callers that do not know the device stay honest)."""
    device = torch.device(device) if device is not None else None
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    elif device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is not None and device.type == "mps":
        torch.mps.synchronize()


@functools.lru_cache(maxsize=None)
def _accepts_logits_to_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def new_cache(model) -> DynamicCache:
    """An empty, croppable KV cache for ``model``."""
    return DynamicCache(config=model.config)


def forward(model, input_ids: torch.Tensor, cache: DynamicCache, last_only: bool = False) -> torch.Tensor:
    """Run ``input_ids`` (1, n) through ``model`` after ``cache``; return float32 logits (1, n or 1, V)."""
    kwargs = {"logits_to_keep": 1} if last_only and _accepts_logits_to_keep(type(model)) else {}
    out = model(input_ids=input_ids.to(model.device), past_key_values=cache, use_cache=True, **kwargs)
    logits = out.logits
    return (logits[:, -1:] if last_only else logits).float()


def crop(cache: DynamicCache, length: int) -> None:
    """Roll ``cache`` back to its first ``length`` tokens (negative crop: tokens to remove)."""
    remove = cache.get_seq_length() - length
    if remove > 0:
        cache.crop(-remove)


def logits_to_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / temperature) over the last axis."""
    return torch.softmax(logits / temperature, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of ``probs`` (..., V) → (...,)."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def _generator_for(device: torch.device, generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the model runs on {device}; create it with torch.Generator(device={str(device)!r})")
    return generator


def _truncate_at_eos(tokens: list[int], eos_token_id) -> tuple[list[int], bool]:
    if eos_token_id is None:
        return tokens, False
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1], True
    return tokens, False


def next_token(logits: torch.Tensor, do_sample: bool, temperature: float, generator) -> int:
    """Greedy argmax, or a sample from softmax(logits / T), for logits of shape (V,)."""
    if not do_sample:
        return int(logits.argmax(-1))
    return int(sample(logits_to_probs(logits, temperature), generator))


# --------------------------------------------------------------------------------------------
# Autoregressive baseline
# --------------------------------------------------------------------------------------------


BACKENDS = ("eager", "static", "compiled")


def _fast_backend(backend: str):
    """``specnb.fastpath`` for backend "static" or "compiled" (imported lazily: it imports this module)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    from . import fastpath

    return fastpath


@torch.inference_mode()
def autoregressive_generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    generator: torch.Generator | None = None,
    backend: str = "eager",
) -> GenerationResult:
    """Target-only decoding with a KV cache: prefill, then one forward per token. ``backend`` as
    in ``speculative_generate`` ("eager", "static" or "compiled")."""
    if backend != "eager":
        return _fast_backend(backend).static_autoregressive_generate(
            model, input_ids, max_new_tokens, do_sample=do_sample, temperature=temperature, eos_token_id=eos_token_id,
            generator=generator, compiled=backend == "compiled")
    _validate(model, None, input_ids, max_new_tokens, None, do_sample, temperature)
    device = model.device
    generator = _generator_for(device, generator)
    prompt = input_ids.to(device)
    cache = new_cache(model)
    synchronize(device)
    t0 = time.perf_counter()

    logits = forward(model, prompt, cache, last_only=True)  # prefill: (1, 1, V)
    tokens = [next_token(logits[0, -1], do_sample, temperature, generator)]
    synchronize(device)
    ttft = time.perf_counter() - t0
    calls = 1
    _, stopped = _truncate_at_eos(tokens, eos_token_id)
    while len(tokens) < max_new_tokens and not stopped:
        logits = forward(model, torch.tensor([[tokens[-1]]], device=device), cache)  # (1, 1, V)
        tokens.append(next_token(logits[0, -1], do_sample, temperature, generator))
        calls += 1
        _, stopped = _truncate_at_eos(tokens[-1:], eos_token_id)
    synchronize(device)
    seconds = time.perf_counter() - t0
    sequences = torch.cat([prompt, torch.tensor([tokens], device=device, dtype=prompt.dtype)], dim=1)
    return GenerationResult(sequences, prompt.shape[1], "autoregressive", None, [], [], calls, 0, seconds, ttft,
                            ["target"] * len(tokens))


# --------------------------------------------------------------------------------------------
# Speculative decoding
# --------------------------------------------------------------------------------------------


def draft_propose(draft, seq: list[int], cache: DynamicCache, k: int, do_sample, temperature, generator):
    """Draft k tokens autoregressively. Feeds the tokens of ``seq`` its cache lacks (1 or 2), then
    its own proposals. Returns (tokens (k,), draft probs (k, V) or None for greedy)."""
    device = draft.device
    pending = torch.tensor([seq[cache.get_seq_length() :]], device=device)  # (1, 1 or 2)
    tokens, probs = [], []
    for _ in range(k):
        logits = forward(draft, pending, cache, last_only=True)[0, -1]  # (V,)
        if do_sample:
            q = logits_to_probs(logits, temperature)
            tok = sample(q, generator)
            probs.append(q)
        else:
            tok = logits.argmax(-1)
        tokens.append(tok)
        pending = tok.view(1, 1)
    return torch.stack(tokens), (torch.stack(probs) if do_sample else None)


def judge(drafts: torch.Tensor, q: torch.Tensor | None, logits: torch.Tensor, r: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Accept/reject each draft token scored so far: drafts (k,), logits (m, V) with m <= k → bool (m,).

    Greedy (q is None): accept when the target's argmax equals the draft token.
    Sampling: accept x_i when r_i < p_i(x_i) / q_i(x_i) (Leviathan et al., Algorithm 1), with the
    uniforms r drawn once per iteration so parallel and sequential verification agree exactly."""
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


def verify_parallel(target, tail: torch.Tensor, drafts: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
    """ONE target forward over [last token, d_1..d_k] (1, k+1) → logits (k+1, V)."""
    return forward(target, torch.cat([tail, drafts.view(1, -1).to(tail.device)], dim=1), cache)[0]


def verify_sequential(target, tail, drafts, cache, accept) -> torch.Tensor:
    """Seed 002's pitfall: one target forward per token, stopping after the first rejection.
    ``accept(logits_so_far)`` → bool vector. Returns the logits scored, (m, V) with m <= k+1."""
    inputs = torch.cat([tail, drafts.view(1, -1).to(tail.device)], dim=1)  # (1, k+1)
    rows = []
    for i in range(inputs.shape[1]):
        rows.append(forward(target, inputs[:, i : i + 1], cache)[0, -1])
        if i < drafts.shape[0] and not bool(accept(torch.stack(rows))[-1]):
            break
    return torch.stack(rows)


def _scheduled_k(schedule) -> int:
    """The schedule's next k, checked to be an integer >= 1."""
    value = schedule.next_k()
    try:
        k = operator.index(value)
    except TypeError:
        k = None
    if k is None or isinstance(value, bool) or k < 1:
        raise ValueError(f"schedule {schedule!r}.next_k() must return an integer >= 1; got {value!r} (fix the schedule's next_k)")
    return k


@torch.inference_mode()
def speculative_generate(
    target,
    draft,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    k: int | KSchedule,
    do_sample: bool = False,
    temperature: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    verify: str = "parallel",
    generator: torch.Generator | None = None,
    backend: str = "eager",
) -> GenerationResult:
    """Speculative decoding (Leviathan et al. 2023, Algorithm 1) of one prompt.

    Greedy output is token-identical to ``target.generate(do_sample=False)``; sampled output is
    distributed exactly as the target's. Invariants between iterations: ``seq`` holds every token;
    the target cache holds all but the last; the draft cache lags by 1 or 2 tokens (no extra draft
    forward when all k are accepted: the missing token is fed with the next proposal).

    ``k`` is the number of draft tokens per iteration, or a schedule (``specnb.schedules``:
    ``ConstantK``, ``HeuristicK``, ``AdaptiveK`` or any object with ``next_k()``,
    ``update(accepted, proposed)`` and ``reset()``) asked before every iteration and told its
    outcome after; each call runs a reset copy, so calls are independent. Either way k is capped
    at the tokens left, ``proposed`` lists the k of every iteration, and ``GenerationResult.k`` is
    the int k (also for ``ConstantK``) or the schedule's ``name``.

    ``backend``: "eager" (this loop: dynamic caches, cropped after a rejection), "static"
    (preallocated static caches written at explicit positions, rollback by position) or
    "compiled" (static caches and ``torch.compile``d draft and verify steps; CUDA graphs on a
    GPU) — ``specnb.fastpath``, same tokens and statistics. Models the fast path cannot serve raise
    a ValueError naming ``backend="eager"``.
    """
    if backend != "eager":
        fast = _fast_backend(backend)
        if verify != "parallel":
            raise ValueError(f'verify="{verify}" exists only in the eager loop (seed 002\'s pitfall); use backend="eager"')
        return fast.static_speculative_generate(target, draft, input_ids, max_new_tokens, k=k, do_sample=do_sample,
                                                temperature=temperature, eos_token_id=eos_token_id, generator=generator,
                                                compiled=backend == "compiled")
    if isinstance(k, int):  # the int path is unchanged: _validate checks it
        _validate(target, draft, input_ids, max_new_tokens, k, do_sample, temperature, verify)
        schedule, k_label = ConstantK(int(k)), k
    else:
        schedule = as_schedule(k)  # ValueError naming the fix for anything that is not a schedule
        _validate(target, draft, input_ids, max_new_tokens, None, do_sample, temperature, verify)
        k_label = schedule.k if isinstance(schedule, ConstantK) else getattr(schedule, "name", type(schedule).__name__)
        _scheduled_k(schedule)  # a schedule that cannot give a valid first k fails before any forward
    device = target.device
    generator = _generator_for(device, generator)
    prompt = input_ids.to(device)
    t_cache, d_cache = new_cache(target), new_cache(draft)
    accepted, proposed = [], []
    synchronize(device)
    t0 = time.perf_counter()

    logits = forward(target, prompt, t_cache, last_only=True)  # prefill target: (1, 1, V)
    seq = prompt[0].tolist() + [next_token(logits[0, -1], do_sample, temperature, generator)]
    synchronize(device)
    ttft = time.perf_counter() - t0
    target_calls, draft_calls = 1, 0
    forward(draft, prompt, d_cache, last_only=True)  # prefill draft
    draft_calls += 1
    new, stopped = 1, _truncate_at_eos(seq[-1:], eos_token_id)[1]
    sources = ["target"]

    while new < max_new_tokens and not stopped:
        k_i = min(_scheduled_k(schedule), max_new_tokens - new - 1)  # never draft past max_new_tokens
        if k_i == 0:  # one token left: a plain target step
            logits = forward(target, torch.tensor([seq[-1:]], device=device), t_cache)[0]
            emitted = [next_token(logits[-1], do_sample, temperature, generator)]
            origin = ["target"]
            target_calls += 1
        else:
            drafts, q = draft_propose(draft, seq, d_cache, k_i, do_sample, temperature, generator)  # (k_i,), (k_i, V)
            draft_calls += k_i
            r = torch.rand(k_i, generator=generator, device=device) if do_sample else None
            tail = torch.tensor([seq[-1:]], device=device)
            if verify == "parallel":
                logits = verify_parallel(target, tail, drafts, t_cache)  # (k_i+1, V)
                target_calls += 1
            else:
                logits = verify_sequential(target, tail, drafts, t_cache, lambda rows: judge(drafts, q, rows, r, temperature))
                target_calls += logits.shape[0]
            n = first_rejection(judge(drafts, q, logits[:k_i], r, temperature))
            last = correct(logits[n], q[n] if do_sample and n < k_i else None, do_sample, temperature, generator)
            emitted = drafts[:n].tolist() + [last]
            origin = ["draft"] * n + ["bonus" if n == k_i else "correction"]
            accepted.append(n)
            proposed.append(k_i)
            schedule.update(n, k_i)
            crop(t_cache, len(seq) + n)  # keep the prompt, the old last token and n accepted drafts
            crop(d_cache, len(seq) + n)
        emitted, stopped = _truncate_at_eos(emitted, eos_token_id)
        seq.extend(emitted)
        sources.extend(origin[: len(emitted)])
        new += len(emitted)

    synchronize(device)
    seconds = time.perf_counter() - t0
    sequences = torch.tensor([seq], device=device, dtype=prompt.dtype)
    method = "speculative" if verify == "parallel" else "speculative-sequential"
    return GenerationResult(sequences, prompt.shape[1], method, k_label, accepted, proposed, target_calls, draft_calls, seconds,
                            ttft, sources)


# --------------------------------------------------------------------------------------------
# Hugging Face assisted generation, instrumented
# --------------------------------------------------------------------------------------------


@contextmanager
def _assistant_settings(draft, k: int):
    """Constant k, confidence threshold off (HF's default 0.4 silently shortens k); restored after."""
    saved = copy.deepcopy(draft.generation_config)
    draft.generation_config.num_assistant_tokens = k
    draft.generation_config.num_assistant_tokens_schedule = "constant"
    draft.generation_config.assistant_confidence_threshold = 0.0
    try:
        yield
    finally:
        draft.generation_config = saved


class _CallLog(StoppingCriteria):
    """Counts forwards with hooks and, as a never-stopping stopping criterion (HF calls it once per
    assisted iteration, after appending the accepted tokens), records the sequence length after each
    iteration. Draft forwards between two target forwards are that iteration's candidates."""

    def __init__(self, target, draft):
        self.draft_calls, self.candidates, self.lengths = 0, [], []
        self.first_target_end = None
        self._draft_calls_at_last_target = 0
        self._handles = [
            target.register_forward_pre_hook(self._target_pre),
            target.register_forward_hook(self._target_post),
            draft.register_forward_pre_hook(self._draft_pre),
        ]

    def _target_pre(self, module, args):
        self.candidates.append(self.draft_calls - self._draft_calls_at_last_target)
        self._draft_calls_at_last_target = self.draft_calls

    def _target_post(self, module, args, output):
        if self.first_target_end is None:
            synchronize(module.device)
            self.first_target_end = time.perf_counter()

    def _draft_pre(self, module, args):
        self.draft_calls += 1

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        self.lengths.append(input_ids.shape[1])
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def remove(self):
        for h in self._handles:
            h.remove()

    def iterations(self, prompt_len: int) -> tuple[list[int], list[int]]:
        """(accepted, proposed) per iteration that proposed at least one draft token."""
        starts = [prompt_len] + self.lengths
        accepted, proposed = [], []
        for i, cand in enumerate(self.candidates[: len(self.lengths)]):
            if cand > 0:  # HF's last step may score no candidate at all
                accepted.append(min(starts[i + 1] - starts[i] - 1, cand))
                proposed.append(cand)
        return accepted, proposed


def _pad_token_id(model, eos_token_id) -> int:
    for value in (model.generation_config.pad_token_id, model.config.pad_token_id, eos_token_id, 0):
        if isinstance(value, int):
            return value
        if isinstance(value, (list, tuple)) and value:
            return int(value[0])
    return 0


@torch.inference_mode()
def assisted_generate(
    target,
    draft,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    k: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    generator: torch.Generator | None = None,
) -> GenerationResult:
    """Hugging Face assisted generation (``target.generate(assistant_model=draft)``) with exactly k
    draft tokens per iteration (schedule "constant", ``assistant_confidence_threshold=0``).

    HF draws from the global RNG; when ``generator`` is given, a seed drawn from it seeds a forked
    global RNG, so runs are reproducible and the caller's global state is untouched. Call counts
    and accepted tokens come from forward hooks; TTFT is the end of the first target forward (HF
    runs the draft before the target's first forward).
    """
    _validate(target, draft, input_ids, max_new_tokens, k, do_sample, temperature)
    device = target.device
    prompt = input_ids.to(device)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_k=0 if do_sample else None,
        top_p=1.0 if do_sample else None,
        eos_token_id=eos_token_id,
        pad_token_id=_pad_token_id(target, eos_token_id),
    )
    seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else None
    log = _CallLog(target, draft)
    try:
        with _assistant_settings(draft, k), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            synchronize(device)
            t0 = time.perf_counter()
            sequences = target.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),  # explicit: never infer padding from token ids
                generation_config=config,
                assistant_model=draft,
                stopping_criteria=StoppingCriteriaList([log]),
            )
            synchronize(device)
            seconds = time.perf_counter() - t0
    finally:
        log.remove()
    accepted, proposed = log.iterations(prompt.shape[1])
    ttft = log.first_target_end - t0
    first = log.lengths[0] - prompt.shape[1] if log.lengths else sequences.shape[1] - prompt.shape[1]
    return GenerationResult(
        sequences, prompt.shape[1], "assisted", k, accepted, proposed, len(log.candidates), log.draft_calls, seconds, ttft,
        ttft_tokens=max(1, min(first, sequences.shape[1] - prompt.shape[1])),
    )
