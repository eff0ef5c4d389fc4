"""Draft-length schedules for ``speculative_generate(..., k=schedule)``: how many draft tokens to
propose in each iteration.

A schedule is any object with

- ``next_k() -> int``: the k to propose next (>= 1; the loop still caps it at the tokens left);
  it must not change the schedule's state, so asking twice gives the same answer;
- ``update(accepted, proposed)``: the outcome of the iteration just verified (``proposed`` is the
  k actually drafted, after the cap; ``accepted`` how many the target kept, 0..proposed);
- ``reset()``: back to the state before the first iteration.

``speculative_generate`` works on a reset deep copy (``fresh()``), so one schedule object can be
passed to many calls and every call starts from the same state; the k of each iteration is in
``GenerationResult.proposed``. A schedule only decides how many tokens to draft: verification,
and so greedy identity with the target and the exactness of sampling, is the same for every k.

- ``ConstantK(k)``: the same k every iteration (what an int ``k`` means).
- ``HeuristicK(start=5)``: Hugging Face's ``num_assistant_tokens_schedule="heuristic"``
  (transformers ``AssistedCandidateGenerator.update_candidate_strategy``,
  ``generation/candidate_generator.py``, checked against transformers 5.23.0):
  "if num_matches == len(scores[0]) - 1: num_assistant_tokens += 2 else
  num_assistant_tokens = max(1, num_assistant_tokens - 1)" — i.e. +2 when every candidate of the
  iteration was accepted, else -1, floor 1. Reset per call, this is HF's "heuristic_transient";
  HF's plain "heuristic" carries the value over to the next ``generate`` call.
- ``AdaptiveK(c, verify_cost, ...)``: specnb's schedule. It keeps an exponentially weighted Beta
  estimate of alpha from the judged draft tokens (the counts behind
  ``GenerationResult.acceptance_rate``: per iteration, ``accepted`` successes and one failure if
  a token was rejected) and proposes the k that maximises the expected speedup of Leviathan et al.
  (2023) Thm 3.8 with a verify and loop cost per k:
  k* = argmax_k (1 - a^(k+1)) / ((1 - a) (k c + v_k + l_k)).
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Mapping, Sequence

__all__ = ["KSchedule", "ConstantK", "HeuristicK", "AdaptiveK", "as_schedule", "is_schedule", "tokens_per_iteration", "per_k"]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}") from None
    if out < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return out


def _check_outcome(accepted, proposed) -> tuple[int, int]:
    a, p = int(accepted), int(proposed)
    if p < 1 or not 0 <= a <= p:
        raise ValueError(f"update needs 0 <= accepted <= proposed and proposed >= 1; got accepted={accepted!r}, proposed={proposed!r}")
    return a, p


def tokens_per_iteration(alpha: float, k: int) -> float:
    """(1 - alpha^(k+1)) / (1 - alpha), Leviathan et al. Eq. 1 (k + 1 at alpha = 1), plain Python
    (the schedule calls it every iteration; ``specnb.theory`` is the vectorised, checked version)."""
    if alpha >= 1.0:
        return k + 1.0
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


class KSchedule:
    """Base class: subclasses implement ``next_k``, ``update`` and ``reset``; ``name`` labels the
    schedule in results (``GenerationResult.k``)."""

    name = "schedule"

    def next_k(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def update(self, accepted: int, proposed: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def reset(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def fresh(self) -> "KSchedule":
        """A reset deep copy: what ``speculative_generate`` runs, so calls are independent."""
        clone = copy.deepcopy(self)
        clone.reset()
        return clone

    def replay(self, accepted: Sequence[int], proposed: Sequence[int]) -> list[int]:
        """The k a fresh copy asks for before each iteration when fed these outcomes (plus the one
        it would ask next): ``replay(out.accepted, out.proposed)[:-1]`` equals ``out.proposed``
        wherever the cap at ``max_new_tokens`` did not bite."""
        s = self.fresh()
        ks = []
        for a, p in zip(accepted, proposed):
            ks.append(s.next_k())
            s.update(a, p)
        ks.append(s.next_k())
        return ks

    def __repr__(self) -> str:
        return self.name


class ConstantK(KSchedule):
    """k draft tokens every iteration (an int ``k`` passed to ``speculative_generate``)."""

    def __init__(self, k: int):
        self.k = _positive_int(k, "k (draft tokens per iteration)")
        self.name = f"constant(k={self.k})"

    def next_k(self) -> int:
        return self.k

    def update(self, accepted: int, proposed: int) -> None:
        _check_outcome(accepted, proposed)

    def reset(self) -> None:
        pass


class HeuristicK(KSchedule):
    """Hugging Face's "heuristic" ``num_assistant_tokens`` schedule, reset per call.

    Starts at ``start`` (HF's ``num_assistant_tokens``; transformers 5 defaults to 20 tokens with
    the "constant" schedule and a 0.4 confidence threshold; 5 here); after each
    iteration k += 2 if every proposed token was accepted (HF: ``num_matches ==
    len(scores[0]) - 1``, the candidates actually drafted), else k = max(k_min, k - 1) (HF:
    k_min = 1). HF has no upper bound; ``k_max`` (default None: none) caps the counter itself, so
    one rejection at the cap drops k to k_max - 1.
    """

    def __init__(self, start: int = 5, k_max: int | None = None, k_min: int = 1):
        self.start = _positive_int(start, "start")
        self.k_min = _positive_int(k_min, "k_min")
        self.k_max = None if k_max is None else _positive_int(k_max, "k_max")
        if self.k_max is not None and not self.k_min <= self.start <= self.k_max:
            raise ValueError(f"need k_min <= start <= k_max; got k_min={k_min}, start={start}, k_max={k_max}")
        if self.k_max is None and self.start < self.k_min:
            raise ValueError(f"need start >= k_min; got start={start}, k_min={k_min}")
        self.name = f"heuristic(start={self.start}" + (f", k_max={self.k_max})" if self.k_max is not None else ")")
        self.reset()

    def reset(self) -> None:
        self._k = self.start

    def next_k(self) -> int:
        return self._k

    def update(self, accepted: int, proposed: int) -> None:
        a, p = _check_outcome(accepted, proposed)
        if a == p:
            self._k += 2
            if self.k_max is not None:
                self._k = min(self._k, self.k_max)
        else:
            self._k = max(self.k_min, self._k - 1)


def per_k(value, ks: Sequence[int], name: str, allow_zero: bool = False) -> dict[int, float]:
    """A cost given as a number, a mapping k -> cost or a callable k -> cost, as {k: cost} for ``ks``."""
    ks = list(ks)
    if isinstance(value, Mapping):
        missing = [k for k in ks if k not in value]
        if missing:
            raise ValueError(f"{name} maps no cost for k = {missing}; give every k in {ks} (or a single number)")
        costs = [value[k] for k in ks]
    elif callable(value):
        costs = [value(k) for k in ks]
    else:
        costs = [value] * len(ks)
    try:
        costs = [float(v) for v in costs]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, a mapping k -> number or a callable k -> number; got {value!r}") from None
    bad = [v for v in costs if not (math.isfinite(v) and (v >= 0 if allow_zero else v > 0))]
    if bad:
        raise ValueError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'} for every k; got {bad}")
    return dict(zip(ks, costs))


class AdaptiveK(KSchedule):
    """specnb's schedule: the k that maximises the expected speedup at the current estimate of alpha.

    Costs are relative to one target decode step, each a number, a mapping k -> cost for
    k_min..k_max or a callable k -> cost: ``c`` the draft's cost per proposed token,
    ``verify_cost`` the target scoring k+1 tokens in one forward (Leviathan et al. assume 1),
    ``loop_cost`` the loop's own time per iteration outside the forwards (default 0). ``specnb.planner.adaptive_schedule`` fills all three from a
    calibration.

    alpha estimate: successes S and failures F are the judged draft tokens of each iteration
    (``accepted`` successes, plus one failure when a token was rejected: the MLE counts of
    ``GenerationResult.acceptance_rate``), discounted by ``decay`` per iteration
    (S <- decay S + accepted), with a Beta(``prior``) prior: alpha_hat = (a0 + S) / (a0 + b0 + S + F).
    decay = 1 is the plain posterior mean over the whole call; the default 0.9 follows the text
    (about the last 10 iterations). Each iteration proposes
    k = argmax over k_min..k_max of (1 - alpha_hat^(k+1)) / ((1 - alpha_hat)(k c + v_k + l_k))
    (Thm 3.8 with the verify and loop terms; ties go to the smaller k).
    """

    def __init__(self, c: float, verify_cost=1.0, *, k_max: int = 7, k_min: int = 1, loop_cost=0.0,
                 prior: tuple[float, float] = (1.0, 1.0), decay: float = 0.9):
        self.k_max = _positive_int(k_max, "k_max")
        self.k_min = _positive_int(k_min, "k_min")
        if self.k_min > self.k_max:
            raise ValueError(f"need k_min <= k_max; got k_min={k_min}, k_max={k_max}")
        ks = range(self.k_min, self.k_max + 1)
        self.c = per_k(c, ks, "c (draft/target step cost ratio)", allow_zero=True)  # {k: c}
        self.verify_costs = per_k(verify_cost, ks, "verify_cost", allow_zero=False)  # {k: cost}
        self.loop_costs = per_k(loop_cost, ks, "loop_cost", allow_zero=True)
        try:
            a0, b0 = (float(x) for x in prior)
        except (TypeError, ValueError):
            raise ValueError(f"prior must be a pair (a0, b0) of Beta pseudo-counts > 0; got {prior!r}") from None
        if not (a0 > 0 and b0 > 0 and math.isfinite(a0) and math.isfinite(b0)):
            raise ValueError(f"prior must be a pair (a0, b0) of Beta pseudo-counts > 0; got {prior!r}")
        self.prior = (a0, b0)
        if not 0 < decay <= 1:
            raise ValueError(f"decay must lie in (0, 1] (1: no forgetting); got {decay!r}")
        self.decay = float(decay)
        self.name = "adaptive"
        self.reset()

    def reset(self) -> None:
        self.successes, self.failures = 0.0, 0.0

    @property
    def alpha(self) -> float:
        """The current estimate of alpha (Beta posterior mean of the discounted counts)."""
        a0, b0 = self.prior
        return (a0 + self.successes) / (a0 + b0 + self.successes + self.failures)

    def expected_speedup(self, k: int, alpha: float | None = None) -> float:
        """Thm 3.8 with this schedule's costs at k (and the current alpha unless given)."""
        a = self.alpha if alpha is None else alpha
        return tokens_per_iteration(a, k) / (k * self.c[k] + self.verify_costs[k] + self.loop_costs[k])

    def best_k(self, alpha: float) -> int:
        best, best_s = self.k_min, -1.0
        for k in range(self.k_min, self.k_max + 1):
            s = self.expected_speedup(k, alpha)
            if s > best_s * (1 + 1e-12):  # ties (to rounding) go to the smaller k
                best, best_s = k, s
        return best

    def next_k(self) -> int:
        return self.best_k(self.alpha)

    def update(self, accepted: int, proposed: int) -> None:
        a, p = _check_outcome(accepted, proposed)
        self.successes = self.decay * self.successes + a
        self.failures = self.decay * self.failures + (1.0 if a < p else 0.0)


def is_schedule(obj) -> bool:
    """Whether ``obj`` has the schedule interface (next_k, update, reset)."""
    return all(callable(getattr(obj, name, None)) for name in ("next_k", "update", "reset"))


def as_schedule(k) -> KSchedule:
    """An int -> ``ConstantK(k)``; a schedule -> a reset deep copy of it; anything else -> ValueError."""
    if isinstance(k, KSchedule) or is_schedule(k):
        if isinstance(k, type):
            raise ValueError(f"k is the class {k.__name__}, not a schedule; instantiate it, e.g. k={k.__name__}(...)")
        clone = copy.deepcopy(k)
        clone.reset()
        return clone
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(
            f"k must be an integer >= 1 (draft tokens per iteration) or a schedule such as "
            f"specnb.schedules.ConstantK(4), HeuristicK() or AdaptiveK(c=...) (an object with next_k(), "
            f"update(accepted, proposed) and reset()); got {k!r}"
        )
    return ConstantK(k)
