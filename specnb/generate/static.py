"""Static KV caches and compiled decode steps, as in gpt-fast (pytorch-labs/gpt-fast ``generate.py``:
``setup_caches``, ``decode_one_token`` and the verification step, ``torch.compile(mode=
"reduce-overhead", fullgraph=True)``).

- Each model gets ONE preallocated ``transformers.StaticCache`` per role ("target", "draft"),
  capacity rounded up to ``CAPACITY_BUCKET``, kept between calls (``static_state``).
- A step ``(input_ids (1, n), position_ids (1, n)) -> float32 logits`` sets the cache's write
  pointer (``StaticLayer.cumulative_length``) to position_ids[0, 0], so the n tokens land in slots
  start..start+n-1. Rollback is "do not advance": the next step starts after the accepted tokens
  and overwrites stale slots. Stale slots stay hidden because transformers builds the static-cache
  mask as ``kv_idx <= q_offset + q_idx`` over all slots, with ``q_offset`` the write pointer
  (``masking_utils.sdpa_mask``; tests/test_backends.py checks it).
- ``compiled_step``: ``torch.compile`` of a step for one token count (CUDA: "reduce-overhead",
  i.e. CUDA graphs; CPU: inductor's default), compiled and warmed once per (model, role, shape).
- ``check_static_support``: which models can use this (the class declares full-graph compile
  support, sdpa/eager attention, full-attention static layers only).
- ``release(model)`` / ``clear()`` free caches and compiled steps.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import StaticCache
from transformers.cache_utils import StaticLayer

from .checks import max_positions
from .forward import accepts_logits_to_keep, cache_argument, synchronize

__all__ = ["COMPILE_MODES", "CAPACITY_BUCKET", "check_static_support", "static_state", "run_step", "prefill",
           "ensure_compiled", "set_write_position", "release", "clear"]

#: torch.compile mode per device type (None: inductor's default). CUDA graphs remove the launch
#: overhead on a GPU; on a CPU there is nothing to capture.
COMPILE_MODES: dict[str, str | None] = {"cuda": "reduce-overhead", "cpu": None}
#: cache capacities are rounded up to a multiple of this, so calls of similar length share one
#: cache (and its compiled steps) instead of recompiling.
CAPACITY_BUCKET = 128


def _support_problem(model) -> str | None:
    """Why ``model`` cannot use static caches, or None. Read from what the model can do: its class
    declares full-graph compilation (the static-cache contract in transformers 5), its attention
    hides slots by mask, transformers builds a StaticCache for its config whose layers roll back
    by position, and its forward takes a cache (under either name) and position_ids."""
    cls = type(model)
    if not getattr(cls, "_can_compile_fullgraph", False):
        return "its class does not declare static-cache/compile support (_can_compile_fullgraph is False)"
    if model.config._attn_implementation not in ("sdpa", "eager"):
        return f"attention {model.config._attn_implementation!r} is not 'sdpa' or 'eager' (stale cache slots are hidden by the mask only there)"
    if cache_argument(cls) is None or "position_ids" not in inspect.signature(cls.forward).parameters:
        return "its forward takes no KV cache or no position_ids"
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
        raise ValueError(f"{role} ({type(model).__name__}) cannot use the static-cache fast path: {problem}; "
                         'use backend="eager" for this model')


@dataclass
class _Compiled:
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    compile_seconds: float


@dataclass
class StaticState:
    """A model's static cache, its eager steps (keyed by last_only) and compiled steps (keyed by
    (tokens, last_only, mode))."""

    model: torch.nn.Module
    cache: StaticCache
    capacity: int
    limit: int | None
    eager: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)


#: (id(model), role) -> its cache and steps. Entries hold their model (so an id is never reused
#: while its entry lives): ``release(model)`` or ``clear()`` frees them.
_STATE: dict[tuple[int, str], StaticState] = {}
_STEP_IDS = itertools.count()


def release(model) -> None:
    """Drop ``model``'s static caches and compiled steps (both roles)."""
    for role in ("target", "draft"):
        _STATE.pop((id(model), role), None)


def clear() -> None:
    """Drop every static cache and compiled step (the next compiled call compiles again)."""
    _STATE.clear()


def static_state(model, length: int, role: str = "target") -> StaticState:
    """The static cache of ``model`` in ``role`` (a model drafting for itself gets two caches),
    holding at least ``length`` slots; allocated once and reused (a longer request allocates a new
    one, whose steps are compiled again)."""
    state = _STATE.get((id(model), role))
    if state is not None and state.capacity >= length:
        return state
    capacity = CAPACITY_BUCKET * math.ceil(length / CAPACITY_BUCKET)
    cache = StaticCache(config=model.config, max_cache_len=capacity)
    state = StaticState(model, cache, capacity, max_positions(model))
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


def make_step(model, cache: StaticCache, last_only: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The step ``(input_ids (1, n), position_ids (1, n)) -> float32 logits (1, n or 1, V)`` writing
    at slots position_ids[0, 0] onward. Eager as returned; ``torch.compile`` compiles it per token count."""
    extra = {"logits_to_keep": 1} if last_only and accepts_logits_to_keep(type(model)) else {}
    extra[cache_argument(type(model))] = cache
    pass_cache_position = _accepts_cache_position(type(model))  # transformers 5.x releases that still take it

    def step(input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        set_write_position(cache, position_ids[0, 0])
        kwargs = dict(extra, cache_position=position_ids[0]) if pass_cache_position else extra
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=True, **kwargs).logits
        return (logits[:, -1:] if last_only else logits).float()

    return _own_code(step)


def compile_mode(device: torch.device) -> str | None:
    return COMPILE_MODES.get(device.type)


def _uses_cudagraphs(device: torch.device) -> bool:
    return device.type == "cuda" and "reduce-overhead" in str(compile_mode(device))


def _call(fn, input_ids, position_ids, device) -> torch.Tensor:
    if _uses_cudagraphs(device):
        torch.compiler.cudagraph_mark_step_begin()
        return fn(input_ids, position_ids).clone()  # graph outputs are overwritten by the next replay
    return fn(input_ids, position_ids)


def ensure_compiled(model, state: StaticState, tokens: int, last_only: bool) -> float:
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
    state.steps[key] = _Compiled(fn, time.perf_counter() - t0)
    return state.steps[key].compile_seconds


def run_step(model, state: StaticState, input_ids: torch.Tensor, start: int, *, last_only: bool, compiled: bool) -> torch.Tensor:
    """Forward ``input_ids`` (1, n) written at slots start..start+n-1 → float32 logits (1, n or 1, V)."""
    device = model.device
    pos = positions(start, input_ids.shape[1], state.limit, device)
    if not compiled:
        return state.eager[last_only](input_ids, pos)
    ensure_compiled(model, state, input_ids.shape[1], last_only)
    return _call(state.steps[(input_ids.shape[1], last_only, compile_mode(device))].fn, input_ids, pos, device)


def prefill(model, state: StaticState, prompt: torch.Tensor) -> torch.Tensor:
    """Eager forward of the prompt (1, P) into slots 0..P-1 → last logits (1, 1, V)."""
    return run_step(model, state, prompt, 0, last_only=True, compiled=False)


def step_shapes(role: str, k: int | None) -> list[tuple[int, bool]]:
    """(tokens, last_only) of every compiled step a role runs: the target's 1-token decode step and
    (k+1)-token verification, the draft's 2- and 1-token steps."""
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
            seconds += sum(ensure_compiled(model, state, t, last) for t, last in step_shapes(role, k))
    return seconds
