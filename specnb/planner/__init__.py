"""A speculative-decoding planner: from calibration prompts, replay every candidate draft's greedy
acceptance and measure its costs, predict the speedup of every (draft, k) with a prediction
interval, recommend one, run it, and check the prediction against an interleaved measurement on
prompts the calibration never saw.

- ``checks``: input checks of the public functions, run before anything is measured.
- ``costs``: timed calibration runs; alpha and the draft, verify and loop costs per k.
- ``predict``: the extended Thm 3.8 prediction (theory in its docstring), ``calibrate``,
  ``recommend``, ``run_recommended``, ``adaptive_schedule``, ``optimal_k_grid``.
- ``validation``: ``validate`` (predicted vs measured, interleaved), ``validate_runs`` (the same from
  per-prompt runs measured elsewhere, with prompt-level CIs) and ``report``.
- ``runs``: greedy acceptance replayed from where the draft agrees with the target
  (``match_mask``, ``replay``; a prompt-lookup source: ``replay_source``): exact per k, no i.i.d. alpha.
- ``forecast``: each prompt's replayed iterations priced at the measured costs, summed over
  prompts, with a two-stage bootstrap prediction interval for a new set of prompts.

Typical use::

    drafts = {"L1": d1, "L2": d2, "lookup": PromptLookupDraft()}
    plan = planner.calibrate(target, drafts, prompts[:20], ks=range(1, 8), interval_prompts=20)
    best = planner.recommend(plan)                       # the highest predicted speedup, with its interval
    out = planner.run_recommended(target, drafts, plan, ids, 64)
    check = planner.validate(target, drafts, plan, prompts[20:40])
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
from .forecast import forecast
from .runs import match_mask, replay, replay_features, replay_source, tokens_per_iteration
from .validation import VALIDATION_COLUMNS, report, validate, validate_runs

__all__ = [
    "predicted_speedup",
    "calibrate",
    "recommend",
    "run_recommended",
    "validate", "validate_runs",
    "report",
    "optimal_k_grid",
    "adaptive_schedule",
    "match_mask",
    "replay",
    "tokens_per_iteration",
    "replay_source",
    "replay_features",
    "forecast",
    "PLAN_COLUMNS",
    "VALIDATION_COLUMNS",
]
