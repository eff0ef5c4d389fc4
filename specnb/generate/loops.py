"""The decoding loops: one autoregressive, one speculative, for every backend.

- ``autoregressive_decode(step, prompt, ...)``: prefill, then one target step per token.
- ``speculative_decode(target, draft, prompt, ...)``: Leviathan, Kalman & Matias 2023
  (arXiv:2211.17192), Algorithm 1. The draft source proposes k tokens; the target scores all of
  them in ONE step (``verify="parallel"``), or one step per token up to the first rejection
  (``"sequential"``: the pitfall of seed 002, same tokens, more target forwards). Greedy keeps the
  longest agreeing prefix; sampling accepts x_i with probability min(1, p_i/q_i) and on rejection
  samples from norm(max(0, p - q)). Every iteration emits one target token (correction or bonus).
- ``autoregressive_generate`` / ``speculative_generate``: check the input, build the steps for
  ``backend`` ("eager": DynamicCache; "static": static cache; "compiled": static cache and
  ``torch.compile``d steps), time the call (TTFT apart) and return a ``GenerationResult``.

The loops only decide tokens and count; timing is the wrappers' (``on_first_token`` marks TTFT).
Shapes: ``prompt`` is (1, P); ``seq`` a list of every token id so far.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable

import torch

from .checks import check_generator, validate, vocab_size
from .drafts import ModelDraft, builds_source, is_draft_source
from .forward import synchronize
from .result import GenerationResult
from .sampling import correct, first_rejection, judge, next_token, truncate_at_eos
from .schedules import ConstantK, KSchedule, as_schedule
from .steps import check_backend, make_steps

__all__ = ["autoregressive_decode", "speculative_decode", "autoregressive_generate", "speculative_generate"]


@torch.inference_mode()
def autoregressive_decode(step, prompt: torch.Tensor, max_new_tokens: int, *, do_sample: bool, temperature: float,
                          eos_token_id, generator, on_first_token: Callable[[], None] = lambda: None) -> dict:
    """Target-only decoding: returns the fields of a ``GenerationResult`` (no timing)."""
    device = step.model.device
    logits = step(prompt, 0, last_only=True)  # prefill: (1, V)
    seq = prompt[0].tolist() + [next_token(logits[-1], do_sample, temperature, generator)]
    on_first_token()
    new, stopped = 1, truncate_at_eos(seq[-1:], eos_token_id)[1]
    while new < max_new_tokens and not stopped:
        logits = step(torch.tensor([seq[-1:]], device=device), len(seq) - 1, last_only=True)  # (1, V)
        seq.append(next_token(logits[-1], do_sample, temperature, generator))
        new += 1
        stopped = truncate_at_eos(seq[-1:], eos_token_id)[1]
    return dict(seq=seq, target_calls=new, sources=["target"] * new)


def verify_sequential(target, seq: list[int], drafts: torch.Tensor, accept: Callable) -> torch.Tensor:
    """One target step per token of [last token, d_1..d_k], stopping after the first rejection;
    ``accept(logits so far)`` → bool vector. Returns the logits scored, (m, V) with m <= k+1."""
    device = target.model.device
    inputs = torch.cat([torch.tensor(seq[-1:], device=device), drafts.to(device)])  # (k+1,)
    rows = []
    for i in range(inputs.shape[0]):
        rows.append(target(inputs[i : i + 1][None], len(seq) - 1 + i, last_only=True)[-1])
        if i < drafts.shape[0] and not bool(accept(torch.stack(rows))[-1]):
            break
    return torch.stack(rows)


def scheduled_k(schedule, k_max: int | None = None) -> int:
    """The schedule's next k, checked to be an integer >= 1 (and <= ``k_max`` when given)."""
    value = schedule.next_k()
    try:
        k = operator.index(value)
    except TypeError:
        k = None
    if k is None or isinstance(value, bool) or k < 1 or (k_max is not None and k > k_max):
        bound = f"in 1..{k_max} (its k_max)" if k_max is not None else ">= 1"
        raise ValueError(f"schedule {schedule!r}.next_k() must return an integer {bound}; got {value!r} (fix the schedule's next_k)")
    return k


@torch.inference_mode()
def speculative_decode(target, draft, prompt: torch.Tensor, max_new_tokens: int, schedule, *, do_sample: bool,
                       temperature: float, eos_token_id, generator, verify: str = "parallel", k_max: int | None = None,
                       on_first_token: Callable[[], None] = lambda: None) -> dict:
    """Speculative decoding of one prompt with a target step and a draft source; returns the
    fields of a ``GenerationResult`` (no timing). Invariant between iterations: ``seq`` holds
    every token and the target's cache all but the last (the next step writes from len(seq) - 1)."""
    device = target.model.device
    logits = target(prompt, 0, last_only=True)  # prefill: (1, V)
    seq = prompt[0].tolist() + [next_token(logits[-1], do_sample, temperature, generator)]
    on_first_token()
    draft.prefill(prompt)
    target_calls, accepted, proposed, sources = 1, [], [], ["target"]
    new, stopped = 1, truncate_at_eos(seq[-1:], eos_token_id)[1]

    while new < max_new_tokens and not stopped:
        k = min(scheduled_k(schedule, k_max), max_new_tokens - new - 1)  # never draft past max_new_tokens
        if k > 0:
            drafts, q = draft.propose(seq, k)  # (k',), (k', V) or None; k' <= k
            k = drafts.shape[0]
        if k == 0:  # one token left, or no proposal: a plain target step
            logits = target(torch.tensor([seq[-1:]], device=device), len(seq) - 1, last_only=True)
            emitted, origin = [next_token(logits[-1], do_sample, temperature, generator)], ["target"]
            target_calls += 1
        else:
            if do_sample and q is None:  # a deterministic proposal: q is a point mass at each token
                q = torch.nn.functional.one_hot(drafts.to(device), vocab_size(target.model)).float()
            r = torch.rand(k, generator=generator, device=device) if do_sample else None
            if verify == "parallel":
                block = torch.cat([torch.tensor(seq[-1:], device=device), drafts.to(device)])[None]  # (1, k+1)
                logits = target(block, len(seq) - 1)  # (k+1, V)
                target_calls += 1
            else:
                logits = verify_sequential(target, seq, drafts, lambda rows: judge(drafts, q, rows, r, temperature))
                target_calls += logits.shape[0]
            n = first_rejection(judge(drafts, q, logits[:k], r, temperature))
            last = correct(logits[n], q[n] if do_sample and n < k else None, do_sample, temperature, generator)
            emitted, origin = drafts[:n].tolist() + [last], ["draft"] * n + ["bonus" if n == k else "correction"]
            accepted.append(n)
            proposed.append(k)
            schedule.update(n, k)
            draft.accept(n, len(seq))  # rollback: the next steps write right after the accepted tokens
        emitted, stopped = truncate_at_eos(emitted, eos_token_id)
        seq.extend(emitted)
        sources.extend(origin[: len(emitted)])
        new += len(emitted)
    return dict(seq=seq, accepted=accepted, proposed=proposed, target_calls=target_calls, draft_calls=draft.calls,
                sources=sources)


def _timed(decode: Callable[..., dict], device) -> tuple[dict, float, float]:
    """Run ``decode(on_first_token=...)`` between synchronised timestamps: (fields, seconds, ttft)."""
    marks = {}

    def first_token():
        synchronize(device)
        marks["ttft"] = time.perf_counter() - t0

    synchronize(device)
    t0 = time.perf_counter()
    fields = decode(on_first_token=first_token)
    synchronize(device)
    return fields, time.perf_counter() - t0, marks["ttft"]


def _method(name: str, backend: str) -> str:
    return name if backend == "eager" else f"{name}-{backend}"


@torch.inference_mode()
def autoregressive_generate(model, input_ids: torch.Tensor, max_new_tokens: int, *, do_sample: bool = False,
                            temperature: float = 1.0, eos_token_id: int | list[int] | None = None,
                            generator: torch.Generator | None = None, backend: str = "eager") -> GenerationResult:
    """Target-only decoding with a KV cache: prefill, then one forward per token. ``backend`` as
    in ``speculative_generate``."""
    check_backend(backend)
    validate(model, None, input_ids, max_new_tokens, None, do_sample, temperature)
    generator = check_generator(model.device, generator)
    prompt = input_ids.to(model.device)
    step, _, compile_s = make_steps(model, None, backend, prompt.shape[1] + max_new_tokens)
    fields, seconds, ttft = _timed(lambda on_first_token: autoregressive_decode(
        step, prompt, max_new_tokens, do_sample=do_sample, temperature=temperature, eos_token_id=eos_token_id,
        generator=generator, on_first_token=on_first_token), model.device)
    seq = fields.pop("seq")
    return GenerationResult(sequences=torch.tensor([seq], device=prompt.device, dtype=prompt.dtype),
                            prompt_length=prompt.shape[1], method=_method("autoregressive", backend), **fields,
                            seconds=seconds, ttft_seconds=ttft, compile_seconds=compile_s)


def _schedule_for(k, backend: str) -> tuple[KSchedule, int | None, int | str]:
    """(a reset schedule, the bound on k the compiled backend needs or None, the label for
    ``GenerationResult.k``)."""
    if isinstance(k, int) and not isinstance(k, bool):
        return ConstantK(k), k, k
    schedule = as_schedule(k)  # a reset copy; ValueError naming the fix for anything that is not a schedule
    label = schedule.k if isinstance(schedule, ConstantK) else getattr(schedule, "name", type(schedule).__name__)
    bound = getattr(schedule, "k_max", None) or getattr(schedule, "k", None)
    if backend == "compiled" and (not isinstance(bound, int) or bound < 1):
        raise ValueError(f"schedule {schedule!r} has no upper bound on k; the compiled backend compiles one "
                         "verification of k_max + 1 tokens, so give it one (e.g. HeuristicK(k_max=8))")
    return schedule, (bound if backend == "compiled" else None), label


@torch.inference_mode()
def speculative_generate(target, draft, input_ids: torch.Tensor, max_new_tokens: int, *, k: int | KSchedule,
                         do_sample: bool = False, temperature: float = 1.0, eos_token_id: int | list[int] | None = None,
                         verify: str = "parallel", generator: torch.Generator | None = None,
                         backend: str = "eager") -> GenerationResult:
    """Speculative decoding (Leviathan et al. 2023, Algorithm 1) of one prompt.

    Greedy output is token-identical to ``target.generate(do_sample=False)``; sampled output is
    distributed exactly as the target's. ``draft`` is a model sharing the target's vocabulary, or
    a draft source (``specnb.generate.drafts``: ``PromptLookupDraft()``, or any object with
    ``prefill``, ``propose`` and ``accept``), or a module that builds one from the target
    (``as_source(target, ...)``: ``specnb.eagle.EagleDraft``).

    ``k``: draft tokens per iteration, or a schedule (``specnb.generate.schedules``: ``ConstantK``,
    ``HeuristicK``, ``AdaptiveK`` or any object with ``next_k()``, ``update(accepted, proposed)``
    and ``reset()``) asked before every iteration and told its outcome after; each call runs a
    reset copy. k is capped at the tokens left; ``proposed`` lists the k of every iteration.

    ``backend``: "eager" (DynamicCache, cropped after a rejection), "static" (preallocated static
    caches written at explicit positions) or "compiled" (static caches and ``torch.compile``d
    steps; CUDA graphs on a GPU; a schedule needs a bound ``k_max``). Same tokens and statistics.
    """
    check_backend(backend)
    own_source = builds_source(draft)  # an EagleDraft
    if own_source and backend == "compiled":
        raise ValueError(f"{type(draft).__name__} reads the target's features through a forward hook, which the compiled "
                         "backend does not run; use backend='eager' or 'static'")
    model = None if own_source or is_draft_source(draft) else draft
    bound = getattr(draft, "model", None) if model is None and callable(getattr(draft, "bind", None)) else None
    if bound is not None and backend == "compiled":
        raise ValueError(f"{type(draft).__name__} feeds its model a varying number of tokens, which the compiled "
                         "backend would recompile for; use backend='eager' or 'static'")
    inner_source = builds_source(bound)  # e.g. HybridDraft(EagleDraft)
    validate(target, model if bound is None or inner_source else bound, input_ids, max_new_tokens,
             k if isinstance(k, int) else None, do_sample, temperature, verify)
    schedule, k_max, label = _schedule_for(k, backend)
    scheduled_k(schedule, k_max)  # a schedule that cannot give a valid first k fails before any forward
    generator = check_generator(target.device, generator)
    prompt = input_ids.to(target.device)
    t_step, d_step, compile_s = make_steps(target, model if bound is None or inner_source else bound, backend,
                                           prompt.shape[1] + max_new_tokens, k_max)
    sampling = dict(do_sample=do_sample, temperature=temperature, generator=generator)
    if inner_source:  # a source that drafts with a source-building module: give it that source
        draft.bind(None, source=bound.as_source(target, **sampling), **sampling)
    elif bound is not None:  # a source that drafts with a model of its own: give it the model's step
        draft.bind(d_step, **sampling)
    if own_source:
        draft = draft.as_source(target, **sampling)
    source = draft if model is None else ModelDraft(d_step, do_sample=do_sample, temperature=temperature, generator=generator)
    fields, seconds, ttft = _timed(lambda on_first_token: speculative_decode(
        t_step, source, prompt, max_new_tokens, schedule, do_sample=do_sample, temperature=temperature,
        eos_token_id=eos_token_id, generator=generator, verify=verify, k_max=k_max, on_first_token=on_first_token),
        target.device)
    seq = fields.pop("seq")
    name = getattr(source, "name", "speculative") if model is None else "speculative"
    name = name if verify == "parallel" else f"{name}-sequential"
    return GenerationResult(sequences=torch.tensor([seq], device=prompt.device, dtype=prompt.dtype),
                            prompt_length=prompt.shape[1], method=_method(name, backend), k=label, **fields,
                            seconds=seconds, ttft_seconds=ttft, compile_seconds=compile_s)
