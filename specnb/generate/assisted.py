"""Hugging Face's ``generate``, instrumented to return the same ``GenerationResult`` as specnb's
loops: plain greedy / sampling, assisted generation (``assistant_model=draft``) and prompt lookup
(``prompt_lookup_num_tokens=k``).

- ``hf_generate``: any of the three, timed between device syncs, TTFT at the end of the first
  target forward.

- ``assisted_generate``: exactly k draft tokens per iteration (schedule "constant") with
  ``assistant_confidence_threshold=0`` (HF's defaults, 20 tokens and a 0.4 threshold, shorten k
  silently) and an explicit attention mask (without one HF infers padding from token ids, and a
  generated token equal to the pad id corrupts the assistant's mask).
- ``CallLog``: forward hooks and a never-stopping stopping criterion that count target and draft
  forwards and recover (accepted, proposed) per iteration.
"""

from __future__ import annotations

import copy
import logging
import time
from contextlib import contextmanager, nullcontext

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from .checks import validate
from .forward import synchronize
from .result import GenerationResult

__all__ = ["assisted_generate", "hf_generate", "CallLog"]


class _DropInternalAssistantWarning(logging.Filter):
    """HF's own assistant loop passes a generation_config plus kwargs to ``generate`` and then warns
    about it; the warning is about HF internals, not about anything a caller can change."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Passing `generation_config` together with generation-related" not in record.getMessage()


logging.getLogger("transformers.generation.utils").addFilter(_DropInternalAssistantWarning())


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


class CallLog(StoppingCriteria):
    """Counts forwards with hooks and, as a never-stopping stopping criterion (HF calls it once per
    assisted iteration, after appending the accepted tokens), records the sequence length after each
    iteration. With a draft model, draft forwards between two target forwards are that iteration's
    candidates; without one (prompt lookup), they are the tokens a target forward scores beyond the
    one it must (the prompt, on the first forward)."""

    def __init__(self, target, draft=None):
        self.draft_calls, self.candidates, self.lengths, self.inputs = 0, [], [], []
        self.first_target_end = None
        self._draft_calls_at_last_target = 0
        self._has_draft = draft is not None
        self._handles = [
            target.register_forward_pre_hook(self._target_pre, with_kwargs=True),
            target.register_forward_hook(self._target_post),
        ]
        if draft is not None:
            self._handles.append(draft.register_forward_pre_hook(self._draft_pre))

    def _target_pre(self, module, args, kwargs):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]
        self.inputs.append(int(ids.shape[1]))
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
        candidates = self.candidates if self._has_draft else \
            [n - (prompt_len if i == 0 else 1) for i, n in enumerate(self.inputs)]
        accepted, proposed = [], []
        for i, cand in enumerate(candidates[: len(self.lengths)]):
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
def hf_generate(
    target,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    draft=None,
    k: int | None = None,
    prompt_lookup: bool = False,
    do_sample: bool = False,
    temperature: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    generator: torch.Generator | None = None,
) -> GenerationResult:
    """``target.generate``: plain (no draft, ``prompt_lookup`` off), assisted (``draft`` with exactly
    ``k`` tokens per iteration: schedule "constant", ``assistant_confidence_threshold=0``), or prompt
    lookup (``prompt_lookup=True``: ``prompt_lookup_num_tokens=k``, HF's default 2-gram match).

    HF draws from the global RNG; when ``generator`` is given, a seed drawn from it seeds a forked
    global RNG, so runs are reproducible and the caller's global state is untouched. Call counts
    and accepted tokens come from forward hooks; TTFT is the end of the first target forward (HF
    runs the draft before the target's first forward).
    """
    if draft is not None and prompt_lookup:
        raise ValueError("give a draft model (assisted generation) or prompt_lookup=True, not both")
    if (draft is not None or prompt_lookup) and k is None:
        raise ValueError("assisted generation and prompt lookup need k, the tokens drafted per iteration")
    validate(target, draft if draft is not None else target, input_ids, max_new_tokens, k if k is not None else 1,
             do_sample, temperature)
    device = target.device
    prompt = input_ids.to(device)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_k=0 if do_sample else None,
        top_p=1.0 if do_sample else None,
        eos_token_id=eos_token_id if eos_token_id is not None else [],  # None would mean the model's own eos
        pad_token_id=_pad_token_id(target, eos_token_id),
        prompt_lookup_num_tokens=k if prompt_lookup else None,
    )
    seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else None
    log = CallLog(target, draft)
    settings = _assistant_settings(draft, k) if draft is not None else nullcontext()
    try:
        with settings, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
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
    method = "assisted" if draft is not None else "hf prompt lookup" if prompt_lookup else "hf"
    return GenerationResult(
        sequences=sequences, prompt_length=prompt.shape[1], method=method, k=k, accepted=accepted, proposed=proposed,
        target_calls=len(log.inputs), draft_calls=log.draft_calls, seconds=seconds, ttft_seconds=ttft,
        ttft_tokens=max(1, min(first, sequences.shape[1] - prompt.shape[1])),
    )


def assisted_generate(target, draft, input_ids: torch.Tensor, max_new_tokens: int, *, k: int, do_sample: bool = False,
                      temperature: float = 1.0, eos_token_id: int | list[int] | None = None,
                      generator: torch.Generator | None = None) -> GenerationResult:
    """Hugging Face assisted generation with exactly k draft tokens per iteration (``hf_generate``)."""
    return hf_generate(target, input_ids, max_new_tokens, draft=draft, k=k, do_sample=do_sample, temperature=temperature,
                       eos_token_id=eos_token_id, generator=generator)
