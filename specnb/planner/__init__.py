"""A speculative-decoding planner: from a few calibration prompts, measure alpha and the costs of
every candidate draft, predict the speedup of every (draft, k), recommend one, run it, and check
the prediction against an interleaved measurement.

- ``checks``: input checks of the public functions, run before anything is measured.
- ``costs``: timed calibration runs; alpha and the draft, verify and loop costs per k.
- ``predict``: the extended Thm 3.8 prediction (theory in its docstring), ``calibrate``,
  ``recommend``, ``run_recommended``, ``adaptive_schedule``, ``optimal_k_grid``.
- ``validation``: ``validate`` (predicted vs measured, interleaved) and ``report``.
- ``runs``: greedy acceptance replayed from where the draft agrees with the target
  (``match_mask``, ``replay``, ``tokens_per_iteration``): exact per k, no i.i.d. alpha.

Typical use::

    plan = planner.calibrate(target, {"L1": d1, "L2": d2}, prompts[:4], ks=range(1, 8))
    best = planner.recommend(plan)                       # the row with the highest predicted speedup
    out = planner.run_recommended(target, drafts, plan, ids, 64)
    check = planner.validate(target, drafts, plan, prompts[4:8])
    print(planner.report(check))                         # predicted vs measured for every pair

``optimal_k_grid`` gives K* over a grid of (alpha, c) for a heat map; ``adaptive_schedule`` turns
a calibration into ``schedules.AdaptiveK`` for dynamic k.
"""

from .predict import (
    PLAN_COLUMNS,
    adaptive_schedule,
    calibrate,
    optimal_k_grid,
    predicted_speedup,
    recommend,
    run_recommended,
)
from .runs import match_mask, replay, tokens_per_iteration
from .validation import VALIDATION_COLUMNS, report, validate

__all__ = [
    "predicted_speedup",
    "calibrate",
    "recommend",
    "run_recommended",
    "validate",
    "report",
    "optimal_k_grid",
    "adaptive_schedule",
    "match_mask",
    "replay",
    "tokens_per_iteration",
    "PLAN_COLUMNS",
    "VALIDATION_COLUMNS",
]
