"""Fast path: a static KV cache and ``torch.compile`` for the draft and the target (issue 8).

The eager loops in ``specnb.decoding`` grow a ``DynamicCache`` and crop it after every rejection;
every forward has a new shape and pays Python and per-operator dispatch. Here, as in gpt-fast:

- each model gets ONE preallocated ``transformers.StaticCache`` (capacity: prompt + max_new_tokens
  + k + 1, rounded up to ``CAPACITY_BUCKET``), kept between calls like gpt-fast's ``setup_caches``;
- every forward writes its tokens at an explicit start slot (``position_ids`` = start + arange(n);
  the cache's write pointer, ``StaticLayer.cumulative_length``, is set to the start inside the
  step, and ``cache_position`` is passed too where the model's forward still takes it);
- rollback after a rejection is "do not advance": the next forward starts at the first slot after
  the accepted tokens and overwrites the stale ones. Nothing is cropped. Stale slots stay hidden
  because Hugging Face builds the static-cache mask as ``kv_idx <= q_offset + q_idx`` over all
  ``max_cache_len`` slots, with ``q_offset`` the write pointer (tests/test_fastpath.py checks it);
- ``compiled=True`` runs the decode steps through ``torch.compile`` (CUDA: mode
  "reduce-overhead", i.e. CUDA graphs; CPU: inductor's default), one compiled callable per
  (model, step shape), compiled and warmed before the clock starts; the seconds it took are
  reported apart (``compile_seconds``). Prefill stays eager (one call per prompt).

Shapes are fixed, so a compiled run has four: the target runs 1-token steps (plain decode) and
(k+1)-token verifications; the draft runs 2-token steps (the first proposal of an iteration
re-feeds the token before the last, whose slot it rewrites with identical values, so no "did the
draft see everything" bookkeeping is needed) and 1-token steps. Near ``max_new_tokens`` the draft
proposes only k_i = min(k, remaining - 1) tokens, as in the eager loop, and the verification is
padded to k+1 tokens with copies of the last draft token; the padded rows are ignored and their
slots are overwritten later (a bounded k schedule pads to its k_max + 1 the same way). The
statistics (``accepted``, ``proposed``, ``target_calls``, ``draft_calls``, ``sources``) and the
random numbers drawn are those of the eager loop. With CUDA graphs, each call marks a new step
(``torch.compiler.cudagraph_mark_step_begin``) and clones the logits, which the next replay
overwrites.

The caches and compiled steps live in a module registry keyed by (id(model), role) until
``release(model)`` or ``clear()``; one model therefore serves one generation at a time.

Sources:
- pytorch-labs/gpt-fast ``generate.py`` (2023): ``prefill``, ``decode_one_token``,
  ``speculative_decode`` with ``input_pos`` instead of cache cropping, ``torch.compile(mode=
  "reduce-overhead", fullgraph=True)`` of the one-token and verification steps.
- Hugging Face transformers ``cache_utils.StaticCache`` / ``StaticLayer`` and
  ``masking_utils.create_causal_mask`` / ``sdpa_mask`` (transformers 5).
- Leviathan, Kalman & Matias 2023 (arXiv:2211.17192), Algorithm 1: acceptance and correction
  are ``specnb.decoding.judge`` / ``correct``, shared with the eager loop.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import itertools
import math
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from transformers import StaticCache
from transformers.cache_utils import StaticLayer

if TYPE_CHECKING:
    import pandas as pd

from .decoding import (
    BACKENDS,
    GenerationResult,
    _accepts_logits_to_keep,
    _generator_for,
    _max_positions,
    _truncate_at_eos,
    _validate,
    correct,
    first_rejection,
    judge,
    logits_to_probs,
    next_token,
    sample,
    synchronize,
)

__all__ = [
    "StaticGenerationResult",
    "static_speculative_generate",
    "static_autoregressive_generate",
    "check_static_support",
    "warmup",
    "release",
    "clear",
    "step_latency",
    "benchmark_backends",
    "COMPILE_MODES",
    "CAPACITY_BUCKET",
]

#: torch.compile mode per device type (None: inductor's default). CUDA graphs remove the launch
#: overhead on a GPU; on a CPU there is nothing to capture.
COMPILE_MODES: dict[str, str | None] = {"cuda": "reduce-overhead", "cpu": None}
#: cache capacities are rounded up to a multiple of this, so calls of similar length share one
#: cache (and its compiled steps) instead of recompiling.
CAPACITY_BUCKET = 128


@dataclass
class StaticGenerationResult(GenerationResult):
    """A ``GenerationResult`` plus the seconds this call spent compiling and warming its steps
    (0.0 when they were compiled by an earlier call or the backend is not compiled)."""

    compile_seconds: float = 0.0

    def summary(self) -> dict:
        return {**super().summary(), "compile_seconds": self.compile_seconds}


# --------------------------------------------------------------------------------------------
# Which models have a usable static cache
# --------------------------------------------------------------------------------------------


def _support_problem(model) -> str | None:
    """Why ``model`` cannot use this fast path, or None."""
    cls = type(model)
    if not getattr(cls, "_can_compile_fullgraph", False):
        return "its class does not declare static-cache/compile support (_can_compile_fullgraph is False)"
    if model.config._attn_implementation not in ("sdpa", "eager"):
        return f"attention {model.config._attn_implementation!r} is not 'sdpa' or 'eager' (stale cache slots are hidden by the mask only there)"
    params = inspect.signature(cls.forward).parameters
    if "position_ids" not in params or "past_key_values" not in params:
        return "its forward takes no position_ids/past_key_values"
    try:
        layers = StaticCache(config=model.config, max_cache_len=8).layers
    except Exception as exc:  # noqa: BLE001 - reported with the class name
        return f"transformers cannot build a StaticCache for it ({type(exc).__name__}: {exc})"
    kinds = sorted({type(layer).__name__ for layer in layers if type(layer) is not StaticLayer})
    if kinds:
        return f"its static cache has {', '.join(kinds)} layers (sliding/chunked/linear), which cannot roll back by position"
    return None


def check_static_support(model, role: str = "model") -> None:
    """Raise a ValueError naming the model class when it cannot use the static/compiled backends."""
    problem = _support_problem(model)
    if problem is not None:
        raise ValueError(
            f"{role} ({type(model).__name__}) cannot use the static-cache fast path: {problem}; "
            'use backend="eager" (specnb.decoding) for this model'
        )


# --------------------------------------------------------------------------------------------
# One preallocated cache and its compiled steps per model
# --------------------------------------------------------------------------------------------


@dataclass
class _Step:
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    compile_seconds: float


@dataclass
class _Static:
    """A model's static cache, its eager step functions (keyed by last_only) and its compiled
    steps (keyed by (tokens, last_only, mode))."""

    model: torch.nn.Module
    cache: StaticCache
    capacity: int
    limit: int | None
    eager: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)


#: (id(model), role) -> its cache and steps. Entries hold their model (so an id is never reused
#: while its entry lives) and its cache memory: ``release(model)`` or ``clear()`` frees them.
_STATE: dict[tuple[int, str], _Static] = {}


def release(model) -> None:
    """Drop ``model``'s static caches and compiled steps (both roles)."""
    for role in ("target", "draft"):
        _STATE.pop((id(model), role), None)


def clear() -> None:
    """Drop every static cache and compiled step (the next compiled call compiles again)."""
    _STATE.clear()


def _capacity(length: int) -> int:
    return CAPACITY_BUCKET * math.ceil(length / CAPACITY_BUCKET)


def static_state(model, length: int, role: str = "target") -> _Static:
    """The static cache of ``model`` in ``role`` ("target" or "draft": a model drafting for itself
    gets two caches), holding at least ``length`` slots; allocated once and reused (a longer
    request allocates a new one, and its steps are compiled again)."""
    state = _STATE.get((id(model), role))
    if state is not None and state.capacity >= length:
        return state
    capacity = _capacity(length)
    cache = StaticCache(config=model.config, max_cache_len=capacity)
    state = _Static(model, cache, capacity, _max_positions(model))
    state.eager = {last: make_step(model, cache, last) for last in (False, True)}
    with torch.inference_mode():  # allocate eagerly: tensors get fixed (CUDA-graph safe) addresses
        prefill(model, state, torch.zeros((1, 1), dtype=torch.long, device=model.device))
    _STATE[(id(model), role)] = state
    return state


def positions(start: int, n: int, limit: int | None, device) -> torch.Tensor:
    """position_ids (1, n) = start + arange(n); padding beyond the model's positions is clamped
    (its rows are ignored, and learned position tables would otherwise be indexed out of range)."""
    pos = torch.arange(start, start + n, device=device)
    return (pos.clamp_max(limit - 1) if limit is not None else pos)[None]


@functools.lru_cache(maxsize=None)
def _accepts_cache_position(cls: type) -> bool:
    return "cache_position" in inspect.signature(cls.forward).parameters


def set_write_position(cache: StaticCache, start) -> None:
    """Point every layer's write pointer at slot ``start`` (int or 0-d tensor): the next forward
    writes its n tokens into slots start .. start+n-1 and the mask hides every slot after them."""
    for layer in cache.layers:
        if isinstance(start, torch.Tensor):
            layer.cumulative_length.copy_(start)
        else:
            layer.cumulative_length.fill_(start)


def _own_code(fn):
    """``fn`` with a code object of its own. Dynamo keeps compiled graphs per code object, so
    closures of one ``def`` would share one entry list (and one recompile limit) across every
    model and shape; a private code object gives each (model, step) exactly one graph."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{next(_STEP_IDS)}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


_STEP_IDS = itertools.count()


def make_step(model, cache: StaticCache, last_only: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The step ``(input_ids (1, n), position_ids (1, n)) -> float32 logits (1, n or 1, V)``: it
    points the cache's write pointer at position_ids[0, 0], so the n tokens land in slots
    start..start+n-1. Eager as returned; ``torch.compile`` compiles it per token count."""
    extra = {"logits_to_keep": 1} if last_only and _accepts_logits_to_keep(type(model)) else {}
    pass_cache_position = _accepts_cache_position(type(model))  # older transformers 5.x releases

    def step(input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        set_write_position(cache, position_ids[0, 0])
        kwargs = dict(extra, cache_position=position_ids[0]) if pass_cache_position else extra
        logits = model(input_ids=input_ids, position_ids=position_ids, past_key_values=cache, use_cache=True, **kwargs).logits
        return (logits[:, -1:] if last_only else logits).float()

    return _own_code(step)


def compile_mode(device: torch.device) -> str | None:
    return COMPILE_MODES.get(device.type)


def _uses_cudagraphs(device: torch.device) -> bool:
    return device.type == "cuda" and "reduce-overhead" in str(compile_mode(device))


def ensure_compiled(model, state: _Static, tokens: int, last_only: bool) -> float:
    """Compile the (tokens)-token step of ``model`` unless done before; returns the seconds spent
    now (compilation plus 3 warm-up calls: CUDA graph trees warm up, record, then replay).
    The dummy calls write slots 0..tokens-1 only, which every later prefill overwrites."""
    device = model.device
    key = (tokens, last_only, compile_mode(device))
    if key in state.steps:
        return 0.0
    fn = torch.compile(make_step(model, state.cache, last_only), mode=compile_mode(device), fullgraph=True, dynamic=False)
    synchronize(device)
    t0 = time.perf_counter()
    with torch.inference_mode():  # as in generation: dynamo guards on inference tensors and grad mode
        ids = torch.zeros((1, tokens), dtype=torch.long, device=device)
        pos = positions(0, tokens, state.limit, device)
        for _ in range(3):
            _call(fn, ids, pos, device)
    synchronize(device)
    state.steps[key] = _Step(fn, time.perf_counter() - t0)
    return state.steps[key].compile_seconds


def compiled_step(model, state: _Static, tokens: int, last_only: bool) -> _Step:
    """The compiled (tokens)-token step of ``model`` (compiled on first use)."""
    ensure_compiled(model, state, tokens, last_only)
    return state.steps[(tokens, last_only, compile_mode(model.device))]


def _call(fn, input_ids, position_ids, device) -> torch.Tensor:
    if _uses_cudagraphs(device):
        torch.compiler.cudagraph_mark_step_begin()
        return fn(input_ids, position_ids).clone()  # graph outputs are overwritten by the next replay
    return fn(input_ids, position_ids)


def run_step(model, state: _Static, input_ids: torch.Tensor, start: int, *, last_only: bool, compiled: bool) -> torch.Tensor:
    """Forward ``input_ids`` (1, n) written at slots start..start+n-1 → float32 logits (1, n or 1, V)."""
    device = model.device
    pos = positions(start, input_ids.shape[1], state.limit, device)
    if not compiled:
        return state.eager[last_only](input_ids, pos)
    return _call(compiled_step(model, state, input_ids.shape[1], last_only).fn, input_ids, pos, device)


def prefill(model, state: _Static, prompt: torch.Tensor) -> torch.Tensor:
    """Eager forward of the prompt (1, P) into slots 0..P-1 → last logits (1, 1, V)."""
    return run_step(model, state, prompt, 0, last_only=True, compiled=False)


def _steps_for(role: str, k: int | None) -> list[tuple[int, bool]]:
    """(tokens, last_only) of every compiled step a role runs."""
    if role == "draft":
        return [(2, True), (1, True)]
    return [(1, True)] + ([(k + 1, False)] if k is not None else [])


def warmup(target, draft=None, *, length: int, k: int | None = None) -> float:
    """Allocate the caches (``length`` slots at least) and compile every step that a compiled
    generation of this shape runs; returns the seconds spent compiling now (0.0 if all were
    compiled before). The generate functions call it before their clock starts."""
    seconds = 0.0
    for model, role in ((target, "target"), (draft, "draft")):
        if model is not None:
            state = static_state(model, length, role)
            seconds += sum(ensure_compiled(model, state, t, last) for t, last in _steps_for(role, k))
    return seconds


def _prepare(target, draft, length: int, k: int | None, compiled: bool) -> tuple[_Static, _Static | None, float]:
    check_static_support(target, "target")
    if draft is not None:
        check_static_support(draft, "draft")
    compile_s = warmup(target, draft, length=length, k=k) if compiled else 0.0
    t_state = static_state(target, length, "target")
    d_state = static_state(draft, length, "draft") if draft is not None else None
    return t_state, d_state, compile_s


# --------------------------------------------------------------------------------------------
# Autoregressive baseline on the static cache
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def static_autoregressive_generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    generator: torch.Generator | None = None,
    compiled: bool = False,
) -> StaticGenerationResult:
    """``decoding.autoregressive_generate`` on a static cache: eager prefill, then one (compiled)
    1-token step per token, each written at the next slot."""
    _validate(model, None, input_ids, max_new_tokens, None, do_sample, temperature)
    device = model.device
    generator = _generator_for(device, generator)
    prompt = input_ids.to(device)
    state, _, compile_s = _prepare(model, None, prompt.shape[1] + max_new_tokens + 1, None, compiled)
    synchronize(device)
    t0 = time.perf_counter()

    logits = prefill(model, state, prompt)  # (1, 1, V)
    tokens = [next_token(logits[0, -1], do_sample, temperature, generator)]
    synchronize(device)
    ttft = time.perf_counter() - t0
    _, stopped = _truncate_at_eos(tokens, eos_token_id)
    while len(tokens) < max_new_tokens and not stopped:
        start = prompt.shape[1] + len(tokens) - 1  # slot of the last token
        logits = run_step(model, state, torch.tensor([tokens[-1:]], device=device), start, last_only=True, compiled=compiled)
        tokens.append(next_token(logits[0, -1], do_sample, temperature, generator))
        _, stopped = _truncate_at_eos(tokens[-1:], eos_token_id)
    synchronize(device)
    seconds = time.perf_counter() - t0
    sequences = torch.cat([prompt, torch.tensor([tokens], device=device, dtype=prompt.dtype)], dim=1)
    method = "autoregressive-compiled" if compiled else "autoregressive-static"
    return StaticGenerationResult(sequences, prompt.shape[1], method, None, [], [], len(tokens), 0, seconds, ttft,
                                  ["target"] * len(tokens), compile_seconds=compile_s)


# --------------------------------------------------------------------------------------------
# Speculative decoding on static caches
# --------------------------------------------------------------------------------------------


def draft_propose(draft, state: _Static, seq: list[int], k: int, do_sample, temperature, generator, compiled):
    """Draft k tokens. The first step feeds the last two tokens of ``seq`` at slots len-2, len-1
    (the slot len-2 already holds the same token: rewriting it is idempotent), later steps the
    draft's own proposals. Returns (tokens (k,), draft probs (k, V) or None for greedy)."""
    device = draft.device
    pending = torch.tensor([seq[-2:]], device=device)  # (1, 2)
    start = len(seq) - 2
    tokens, probs = [], []
    for _ in range(k):
        logits = run_step(draft, state, pending, start, last_only=True, compiled=compiled)[0, -1]  # (V,)
        if do_sample:
            q = logits_to_probs(logits, temperature)
            tok = sample(q, generator)
            probs.append(q)
        else:
            tok = logits.argmax(-1)
        tokens.append(tok)
        start += pending.shape[1]
        pending = tok.view(1, 1)
    return torch.stack(tokens), (torch.stack(probs) if do_sample else None)


def verify(target, state: _Static, seq: list[int], drafts: torch.Tensor, k: int, compiled: bool) -> torch.Tensor:
    """ONE target forward over [last token, d_1..d_k_i, padding to k] (1, k+1) written from slot
    len(seq)-1 → logits of the real rows (k_i+1, V)."""
    device = target.device
    k_i = drafts.shape[0]
    tail = torch.tensor(seq[-1:], device=device)
    inputs = torch.cat([tail, drafts.to(device), drafts[-1:].to(device).expand(k - k_i)])[None]  # (1, k+1)
    return run_step(target, state, inputs, len(seq) - 1, last_only=False, compiled=compiled)[0, : k_i + 1]


@torch.inference_mode()
def _schedule(k, target, draft, input_ids, max_new_tokens, do_sample, temperature):
    """Validate; return (schedule or None for an int k, the widest k (verification width - 1),
    the label for ``GenerationResult.k``). A schedule needs a bound (``k`` or ``k_max``): the
    static backend verifies a fixed k_max + 1 tokens."""
    if isinstance(k, int) and not isinstance(k, bool):
        _validate(target, draft, input_ids, max_new_tokens, k, do_sample, temperature)
        return None, k, k
    from .schedules import ConstantK, as_schedule

    schedule = as_schedule(k)  # a reset copy; ValueError for anything that is not a schedule
    _validate(target, draft, input_ids, max_new_tokens, None, do_sample, temperature)
    bound = getattr(schedule, "k_max", None) or getattr(schedule, "k", None)
    if not isinstance(bound, int) or bound < 1:
        raise ValueError(f"schedule {schedule!r} has no upper bound on k; the static backend compiles one "
                         "verification of k_max + 1 tokens, so give it one (e.g. HeuristicK(k_max=8))")
    label = schedule.k if isinstance(schedule, ConstantK) else getattr(schedule, "name", type(schedule).__name__)
    return schedule, bound, label


def _next_k(schedule, k_max: int) -> int:
    k = schedule.next_k() if schedule is not None else k_max
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= k_max:
        raise ValueError(f"schedule {schedule!r}.next_k() must return an integer in 1..{k_max} (its k_max); got {k!r}")
    return k


@torch.inference_mode()
def static_speculative_generate(
    target,
    draft,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    k,
    do_sample: bool = False,
    temperature: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    generator: torch.Generator | None = None,
    compiled: bool = False,
) -> StaticGenerationResult:
    """``decoding.speculative_generate`` (parallel verification) on static caches, optionally
    compiled. Same tokens, statistics and random-number consumption as the eager loop.

    ``k`` is an int or a bounded schedule (``specnb.schedules``; bound ``k``/``k_max``): each
    iteration drafts k_i <= k_max tokens and the target verifies k_max + 1 (padded), one shape.
    Invariant between iterations: ``seq`` holds every token; slots 0..len(seq)-2 of the target's
    cache and 0..len(seq)-3 of the draft's hold the KV of ``seq``; later slots are stale and are
    overwritten before any query can see them.
    """
    schedule, k_max, k_label = _schedule(k, target, draft, input_ids, max_new_tokens, do_sample, temperature)
    _next_k(schedule, k_max)  # a schedule that cannot give a valid first k fails before any forward
    device = target.device
    generator = _generator_for(device, generator)
    prompt = input_ids.to(device)
    t_state, d_state, compile_s = _prepare(target, draft, prompt.shape[1] + max_new_tokens + k_max + 1, k_max, compiled)
    accepted, proposed = [], []
    synchronize(device)
    t0 = time.perf_counter()

    logits = prefill(target, t_state, prompt)  # (1, 1, V)
    seq = prompt[0].tolist() + [next_token(logits[0, -1], do_sample, temperature, generator)]
    synchronize(device)
    ttft = time.perf_counter() - t0
    prefill(draft, d_state, prompt.to(draft.device))
    target_calls, draft_calls = 1, 1
    new, stopped = 1, _truncate_at_eos(seq[-1:], eos_token_id)[1]
    sources = ["target"]

    while new < max_new_tokens and not stopped:
        k_i = min(_next_k(schedule, k_max), max_new_tokens - new - 1)  # never draft past max_new_tokens
        if k_i == 0:  # one token left: a plain target step
            logits = run_step(target, t_state, torch.tensor([seq[-1:]], device=device), len(seq) - 1,
                              last_only=True, compiled=compiled)[0]
            emitted = [next_token(logits[-1], do_sample, temperature, generator)]
            origin = ["target"]
            target_calls += 1
        else:
            drafts, q = draft_propose(draft, d_state, seq, k_i, do_sample, temperature, generator, compiled)  # (k_i,), (k_i, V)
            draft_calls += k_i
            r = torch.rand(k_i, generator=generator, device=device) if do_sample else None
            logits = verify(target, t_state, seq, drafts, k_max, compiled)  # (k_i+1, V)
            target_calls += 1
            n = first_rejection(judge(drafts, q, logits[:k_i], r, temperature))
            last = correct(logits[n], q[n] if do_sample and n < k_i else None, do_sample, temperature, generator)
            emitted = drafts[:n].tolist() + [last]
            origin = ["draft"] * n + ["bonus" if n == k_i else "correction"]
            accepted.append(n)
            proposed.append(k_i)
            if schedule is not None:
                schedule.update(n, k_i)
            # rollback = nothing: the next forwards start right after the n accepted tokens
        emitted, stopped = _truncate_at_eos(emitted, eos_token_id)
        seq.extend(emitted)
        sources.extend(origin[: len(emitted)])
        new += len(emitted)

    synchronize(device)
    seconds = time.perf_counter() - t0
    sequences = torch.tensor([seq], device=device, dtype=prompt.dtype)
    method = "speculative-compiled" if compiled else "speculative-static"
    return StaticGenerationResult(sequences, prompt.shape[1], method, k_label, accepted, proposed, target_calls, draft_calls,
                                  seconds, ttft, sources, compile_seconds=compile_s)


# --------------------------------------------------------------------------------------------
# Measurement: step latency and an interleaved benchmark of the backends
# --------------------------------------------------------------------------------------------

def step_latency(model, *, context: int, tokens: int = 1, backend: str = "static", role: str = "target",
                 min_run_time: float = 0.3, seed: int = 0) -> dict:
    """Median latency of one forward of ``tokens`` tokens after ``context`` cached tokens, on the
    static cache (``backend="static"``) or its compiled step (``"compiled"``; compile time
    excluded and returned as ``compile_seconds``). Every timed call writes the same slots, so each
    repeat sees the same context: the static cache's rollback is free. ``"eager"`` delegates to
    ``specnb.timing.step_latency`` (DynamicCache + crop)."""
    from .timing import benchmark_op
    from .timing import step_latency as eager_step_latency

    if backend == "eager":
        return {**eager_step_latency(model, context=context, tokens=tokens, min_run_time=min_run_time, seed=seed),
                "backend": backend, "compile_seconds": 0.0}
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    check_static_support(model)
    compiled = backend == "compiled"
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    last_only = tokens == 1
    with torch.inference_mode():  # inputs made here are inference tensors, like generation's (no recompile)
        prefix = torch.randint(0, vocab, (1, context), generator=gen).to(model.device)
        step = torch.randint(0, vocab, (1, tokens), generator=gen).to(model.device)
        state = static_state(model, context + tokens + 1, role)
        compile_s = ensure_compiled(model, state, tokens, last_only) if compiled else 0.0
        prefill(model, state, prefix)
        out = benchmark_op(lambda: run_step(model, state, step, context, last_only=last_only, compiled=compiled),
                           label=f"{backend}: {tokens} token(s) after {context}", min_run_time=min_run_time)
    return {**out, "context": context, "tokens": tokens, "backend": backend, "compile_seconds": compile_s}


def _generate(backend: str, target, draft, ids, max_new_tokens: int, k: int | None):
    from . import decoding

    if backend == "eager":
        if draft is None:
            return decoding.autoregressive_generate(target, ids, max_new_tokens)
        return decoding.speculative_generate(target, draft, ids, max_new_tokens, k=k)
    compiled = backend == "compiled"
    if draft is None:
        return static_autoregressive_generate(target, ids, max_new_tokens, compiled=compiled)
    return static_speculative_generate(target, draft, ids, max_new_tokens, k=k, compiled=compiled)


def benchmark_backends(
    target,
    drafts: Mapping[str, torch.nn.Module],
    prompts: Sequence[torch.Tensor],
    *,
    ks: Sequence[int] = (1, 2, 4),
    backends: Sequence[str] = BACKENDS,
    repeats: int = 5,
    max_new_tokens: int = 32,
    min_run_time: float = 0.3,
    progress: bool = False,
) -> pd.DataFrame:
    """Compare the eager, static and compiled backends on one target and its drafts (greedy).

    Returns one tidy frame, column ``measure``:
    - "compile": seconds to compile and warm each compiled step (model, tokens);
    - "step_latency": median latency of a 1-token step of the target and of every draft, and of
      the target's (k+1)-token verification, at the longest prompt's context
      (``ratio_to_target_step``: c for drafts, the verify cost for the target);
    - "generate": per prompt, every (backend, method, draft, k) timed with
      ``specnb.timing.compare`` (all backends and configurations interleaved, ``repeats`` rounds
      after a warm-up round), with ``identical_to_eager``: the greedy tokens equal the target's
      eager autoregressive ones.
    Every row carries ``specnb.timing.environment()``. Compilation happens before any timing.
    """
    import pandas as pd

    from .timing import compare, environment

    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; choose from {BACKENDS}")
    if not prompts:
        raise ValueError("prompts is empty; pass a list of (1, prompt_len) token tensors")
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be integers >= 1 (draft tokens per iteration); got {list(ks)!r}")
    models = {"target": target, **dict(drafts)}
    context = max(int(p.shape[1]) for p in prompts)
    length = context + max_new_tokens + max(ks) + 1
    rows = []

    if "compiled" in backends:  # compile everything first, so no timing below includes it
        with torch.inference_mode():
            for name, model in models.items():
                check_static_support(model, name)
                role = "target" if name == "target" else "draft"
                state = static_state(model, length, role)
                shapes = _steps_for(role, None) + ([(k + 1, False) for k in ks] if role == "target" else [])
                for tokens, last_only in shapes:
                    rows.append(dict(measure="compile", backend="compiled", model=name, tokens=tokens,
                                     compile_seconds=ensure_compiled(model, state, tokens, last_only)))

    for backend in backends:
        base = None
        for name, model in models.items():
            for tokens in [1] + ([k + 1 for k in ks] if name == "target" else []):
                out = step_latency(model, context=context, tokens=tokens, backend=backend, min_run_time=min_run_time,
                                   role="target" if name == "target" else "draft")
                base = out["median_s"] if name == "target" and tokens == 1 else base
                rows.append(dict(measure="step_latency", backend=backend, model=name, tokens=tokens, context=context,
                                 median_s=out["median_s"], iqr_s=out["iqr_s"], runs=out["runs"],
                                 ratio_to_target_step=out["median_s"] / base))

    configs = {}
    for backend in backends:
        configs[f"{backend}/autoregressive"] = (backend, "autoregressive", None, None)
        for name in drafts:
            for k in ks:
                configs[f"{backend}/speculative/{name}/k={k}"] = (backend, "speculative", name, k)
    for p, ids in enumerate(prompts):
        reference = _generate("eager", target, None, ids, max_new_tokens, None).sequences
        identical = {m: torch.equal(_generate(b, target, drafts.get(d) if d else None, ids, max_new_tokens, k).sequences.cpu(),
                                    reference.cpu())
                     for m, (b, _, d, k) in configs.items()}
        methods = {m: functools.partial(_generate, b, target, drafts[d] if d else None, ids, max_new_tokens, k)
                   for m, (b, _, d, k) in configs.items()}
        runs = compare(methods, repeats=repeats, progress=progress, device=target.device)
        for row in runs.to_dict("records"):
            b, kind, d, k = configs[row["method"]]
            rows.append(dict(row, measure="generate", backend=b, method=kind, model=d or "target", draft=d, k=k,
                             prompt=p, prompt_length=int(ids.shape[1]), max_new_tokens=max_new_tokens,
                             identical_to_eager=identical[row["method"]], config=row["method"]))
    return pd.DataFrame(rows).assign(**environment(target.device))


# --------------------------------------------------------------------------------------------
# Command line: python -m specnb.fastpath bench ...
# --------------------------------------------------------------------------------------------


def _summaries(table) -> list:
    """(title, frame) pairs for printing a ``benchmark_backends`` table."""
    out = []
    lat = table[table.measure == "step_latency"]
    if len(lat):
        out.append(("step latency, median ms", lat.pivot_table(index=["model", "tokens"], columns="backend", values="median_s") * 1e3))
    gen = table[table.measure == "generate"]
    if len(gen):
        out.append(("decode tokens/s (median over repeats and prompts)",
                    gen.groupby(["backend", "method", "model", "k"], dropna=False).agg(
                        tokens_per_second=("tokens_per_second", "median"), ttft_seconds=("ttft_seconds", "median"),
                        acceptance_rate=("acceptance_rate", "median"), identical=("identical_to_eager", "all"))))
    comp = table[table.measure == "compile"]
    if len(comp):
        out.append(("compile seconds (steps compiled in this run)", comp.groupby("model")["compile_seconds"].sum()))
    return out


def main(argv: list[str] | None = None) -> int:
    from .models import load_spec

    parser = argparse.ArgumentParser(prog="python -m specnb.fastpath", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="eager vs static vs compiled: step latency, verify cost, tokens/s, compile seconds")
    bench.add_argument("--target", default="tiny:llama:layers=8:hidden=256:vocab_size=512")
    bench.add_argument("--draft", action="append", help="draft spec (repeatable); default copy:noise=0.05:layers=2")
    bench.add_argument("--k", default="1,2,4", help="comma-separated draft lengths")
    bench.add_argument("--backends", default=",".join(BACKENDS))
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--max-new-tokens", type=int, default=32)
    bench.add_argument("--prompt-length", type=int, default=16)
    bench.add_argument("--prompts", type=int, default=1, help="number of prompts")
    bench.add_argument("--heldout", action="store_true",
                       help="prompts cut from the zoo corpus's held-out split with the target's tokenizer "
                            "(default: random token ids, which a trained draft rarely predicts)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    bench.add_argument("--output", default="fastpath", help="results CSV stem (data/results/STEM.csv)")
    args = parser.parse_args(argv)

    import pandas as pd

    from .results import append_rows, result_path

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = load_spec(args.target, device=device)
        specs = args.draft or ["copy:noise=0.05:layers=2"]
        drafts = {spec: load_spec(spec, target=target, device=device) for spec in specs}
        if args.heldout:
            from .measure import heldout_prompts
            from .models import load_tokenizer
            prompts = heldout_prompts(load_tokenizer(args.target), n=args.prompts, length=args.prompt_length, seed=args.seed)
            prompts = [p.to(device) for p in prompts]
        else:
            gen = torch.Generator().manual_seed(args.seed)
            prompts = [torch.randint(0, target.config.vocab_size, (1, args.prompt_length), generator=gen).to(device)
                       for _ in range(args.prompts)]
        table = benchmark_backends(target, drafts, prompts, ks=[int(k) for k in args.k.split(",")],
                                   backends=args.backends.split(","), repeats=args.repeats,
                                   max_new_tokens=args.max_new_tokens, progress=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 4):
        for title, frame in _summaries(table):
            print(f"\n{title}\n{frame}")
    path = result_path(args.output)
    append_rows(path, table.assign(target=args.target))
    print(f"\n{len(table)} rows appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
