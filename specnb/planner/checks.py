"""Input checks of the planner's public functions; all run before anything is measured."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from ..generate.checks import validate as check_inputs
from ..generate.drafts import is_draft_source


def check_ks(ks, name: str = "ks") -> list[int]:
    try:
        values = list(ks)
    except TypeError:
        raise ValueError(f"{name} must be an iterable of integers >= 1, e.g. range(1, 8); got {ks!r}") from None
    if not values:
        raise ValueError(f"{name} is empty; give the draft lengths to plan for, e.g. range(1, 8)")
    out = []
    for k in values:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} must hold integers >= 1 (draft tokens per iteration); got {k!r} in {values!r}")
        out.append(int(k))
    return sorted(set(out))


def check_drafts(drafts) -> dict:
    if not isinstance(drafts, Mapping):
        raise ValueError(f"drafts must be a dict name -> draft model; got {type(drafts).__name__}")
    if not drafts:
        raise ValueError("drafts is empty; pass a dict name -> draft model, e.g. {'L1': truncated_copy(target, 1)}")
    return dict(drafts)


def check_prompts(prompts) -> list[torch.Tensor]:
    if isinstance(prompts, torch.Tensor):
        raise ValueError("prompts must be a list of (1, prompt_len) tensors, not one tensor; wrap it: [input_ids]")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty; give at least one (1, prompt_len) token tensor")
    return prompts


def check_new_tokens(new_tokens) -> int:
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 2:
        raise ValueError(f"new_tokens must be an integer >= 2 (decode tokens/s needs tokens after the first); got {new_tokens!r}")
    return new_tokens


def check_plan(plan) -> None:
    if not isinstance(plan, pd.DataFrame):
        raise ValueError(f"plan must be the DataFrame returned by planner.calibrate; got {type(plan).__name__}")
    missing = [c for c in ("draft", "k", "predicted_speedup") if c not in plan.columns]
    if missing:
        raise ValueError(f"plan lacks columns {missing}; pass the DataFrame returned by planner.calibrate")
    if plan.empty:
        raise ValueError("plan is empty; calibrate at least one draft and one k")


def check_calibration(target, drafts, prompts, ks, new_tokens, costs, alpha_ks, repeats, context, min_run_time,
                      latency_model):
    """``planner.calibrate``'s arguments checked and normalised: (drafts, prompts, ks, new_tokens,
    costs, run_ks, context), where run_ks are the k of the speculative runs and context defaults
    to the median prompt length + new_tokens / 2. Every shape, vocabulary and position check of
    ``generate.checks.validate`` runs here too."""
    drafts = check_drafts(drafts)
    prompts = check_prompts(prompts)
    ks = check_ks(ks)
    new_tokens = check_new_tokens(new_tokens)
    if latency_model is not None:
        if not callable(getattr(latency_model, "predict", None)):
            raise ValueError("latency_model must have predict(model, context, tokens) -> seconds, e.g. specnb.latency.calibrate()")
        costs = "latency model"
    elif costs not in ("in-run", "step"):
        raise ValueError(f"costs must be 'in-run' or 'step' (or pass latency_model=...); got {costs!r}")
    if costs == "in-run":
        if alpha_ks is not None:
            raise ValueError("alpha_ks is for costs='step' or a latency model; 'in-run' runs every k of ks")
        run_ks = ks
        if new_tokens < ks[-1] + 2:
            raise ValueError(f"new_tokens={new_tokens} never lets k={ks[-1]} draft in full (k is capped at the tokens left); "
                             f"use new_tokens >= {ks[-1] + 2}, better >= 32")
    else:
        run_ks = sorted({ks[0], ks[-1]}) if alpha_ks is None else check_ks(alpha_ks, "alpha_ks")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1; got {repeats!r}")
    if not min_run_time > 0:
        raise ValueError(f"min_run_time must be > 0 seconds; got {min_run_time!r}")
    if context is None:
        context = int(round(float(np.median([ids.shape[1] for ids in prompts])) + new_tokens / 2))
    elif isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be an integer >= 1 (cached tokens before the timed step); got {context!r}")
    for name, draft in drafts.items():
        if draft is target:
            raise ValueError(f"draft {name!r} is the target object itself (its forwards could not be told apart); "
                             "use a copy, e.g. specnb.models.perturbed_copy(target, 0.0)")
        if not isinstance(draft, torch.nn.Module) and not (is_draft_source(draft) and not hasattr(draft, "bind")):
            raise ValueError(f"draft {name!r} must be a draft model or a draft source that proposes from the sequence alone "
                             f"(e.g. PromptLookupDraft()); got {type(draft).__name__}")
    for ids in prompts:  # every shape, vocabulary and position check before anything runs
        for draft in drafts.values():
            check_inputs(target, draft if isinstance(draft, torch.nn.Module) else None, ids, new_tokens,
                         max(ks[-1], run_ks[-1]), False, 1.0)

    return drafts, prompts, ks, new_tokens, costs, run_ks, context
