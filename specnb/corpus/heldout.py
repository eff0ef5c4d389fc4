"""Held-out data from the zoo corpus (the running interpreter's standard library, split by file
with ``split_of``): what the experiments measure on and the zoo evaluates on.

- ``heldout_prompts(tokenizer, n, length)``: n prompts cut at seeded offsets from distinct files
- ``corpus_tokens(tokenizer, split)``: a split's tokens, files in a seeded order, end-of-text between
- ``heldout_windows(tokens, seq_len)``: non-overlapping windows spread evenly over a token array
"""

from __future__ import annotations

import random

import numpy as np
import torch

from .stdlib import list_stdlib_files, split_of, stdlib_dir

def split_files(split: str, seed: int = 0) -> tuple:
    """(stdlib root, the relative paths of ``split``'s files in the order seeded by ``seed``)."""
    root = stdlib_dir()
    files = [f for f in list_stdlib_files(root) if split_of(f) == split]
    if not files:
        raise ValueError(f"no {split!r} files in {root}; splits are 'train', 'validation' and 'test'")
    random.Random(seed).shuffle(files)
    return root, files

__all__ = ["heldout_prompts", "corpus_tokens", "heldout_windows"]


def heldout_prompts(tokenizer, n: int, length: int = 64, seed: int = 0, split: str = "test") -> list[torch.Tensor]:
    """``n`` prompts of ``length`` tokens, (1, length) each, cut at seeded offsets from distinct
    files of the zoo corpus's held-out ``split`` of the running interpreter's standard library."""
    if n < 1 or length < 1:
        raise ValueError(f"n and length must be >= 1; got n={n}, length={length}")
    root, files = split_files(split, seed)
    prompts = []
    for rel in files:
        try:
            ids = tokenizer((root / rel).read_text(encoding="utf-8"), verbose=False).input_ids  # whole files: no length warning
        except (UnicodeDecodeError, OSError):
            continue
        if len(ids) < 2 * length:
            continue
        start = random.Random(f"{seed}:{rel}").randrange(0, len(ids) - length)
        prompts.append(torch.tensor([ids[start : start + length]]))
        if len(prompts) == n:
            return prompts
    raise ValueError(f"only {len(prompts)} {split} files hold {2 * length}+ tokens; ask for fewer or shorter prompts")


def corpus_tokens(tokenizer, *, split: str = "test", max_tokens: int = 200_000, seed: int = 0) -> np.ndarray:
    """Up to ``max_tokens`` tokens of one split of the zoo's corpus (the running interpreter's
    standard library, split by file with ``zoo.split_of``), files in a seeded order, each file's
    tokens followed by the end-of-text id. Needs no cache: any machine with Python can rebuild it."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1; got {max_tokens}")
    root, files = split_files(split, seed)
    eot = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    out, total = [], 0
    for rel in files:
        try:
            ids = tokenizer((root / rel).read_text(encoding="utf-8"), verbose=False).input_ids + [eot]
        except (UnicodeDecodeError, OSError):
            continue
        out.append(np.asarray(ids[: max_tokens - total], dtype=np.int64))
        total += len(out[-1])
        if total >= max_tokens:
            break
    return np.concatenate(out)


def heldout_windows(tokens: np.ndarray, *, seq_len: int = 256, max_tokens: int = 8192) -> torch.Tensor:
    """Non-overlapping ``seq_len + 1`` windows spread evenly over a token array: (n, seq_len + 1)."""
    if seq_len < 1 or max_tokens < seq_len:
        raise ValueError(f"need 1 <= seq_len <= max_tokens; got seq_len={seq_len}, max_tokens={max_tokens}")
    available = (len(tokens) - 1) // seq_len
    if available < 1:
        raise ValueError(f"{len(tokens)} tokens hold no window of {seq_len + 1}; use a shorter seq_len")
    picks = np.unique(np.linspace(0, available - 1, min(available, max_tokens // seq_len)).round().astype(int))
    return torch.from_numpy(np.stack([np.asarray(tokens[i * seq_len:i * seq_len + seq_len + 1], dtype=np.int64) for i in picks]))
