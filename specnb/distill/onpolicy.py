"""On-policy training text: the target's own greedy continuations of HumanEval-shaped prompts.

A draft is judged on what the target writes, not on human text (DistillSpec, Zhou et al. 2024,
arXiv:2310.08461, Sec. 4: on-policy data helps most). The prompts here are the openings of
documented functions of the standard library's train split (signature and docstring, cut to a
fixed length so a batch needs no padding), never a HumanEval prompt.

- ``function_prompts(tokenizer, n, length)``: ``n`` windows (n, length) starting at ``def`` lines of
  documented functions, files in a seeded order.
- ``greedy_continuations(target, prompts, new_tokens, batch, out_dir)``: (n, length + new_tokens)
  ids, the prompt then the target's greedy continuation (bf16 autocast: a training text, not a
  reference); with ``out_dir``, each batch is kept there as ``chunk-NNNNN.pt`` (written atomically)
  and a later call skips the batches present, so an interrupted generation resumes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch
from tqdm import tqdm

from ..atomic import atomic_path
from ..corpus.heldout import split_files

__all__ = ["function_prompts", "greedy_continuations"]


def function_prompts(tokenizer, n: int, length: int = 64, *, split: str = "train", seed: int = 0) -> torch.Tensor:
    """(n, length) token windows opening at documented functions of ``split`` (at most one per 3
    functions of a file, files shuffled by ``seed``)."""
    if n < 1 or length < 1:
        raise ValueError(f"n and length must be >= 1; got n={n}, length={length}")
    root, files = split_files(split, seed)
    out = []
    for rel in files:
        try:
            text = (root / rel).read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = text.splitlines(keepends=True)
        funcs = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and ast.get_docstring(f)]
        for f in funcs[::3]:
            ids = tokenizer("".join(lines[f.lineno - 1 :]).lstrip(), add_special_tokens=False,
                            verbose=False).input_ids[:length]  # the rest of the file: no length warning
            if len(ids) == length:
                out.append(ids)
            if len(out) == n:
                return torch.tensor(out)
    raise ValueError(f"found only {len(out)} documented functions of {length} tokens in the {split!r} split; ask for fewer")


@torch.no_grad()
def greedy_continuations(target, prompts: torch.Tensor, new_tokens: int, *, batch: int = 64, autocast: bool = True,
                         out_dir: str | Path | None = None, progress: bool = True) -> torch.Tensor:
    """The prompts followed by the target's greedy continuation of ``new_tokens`` (never stopped at
    eos); batch b of ``batch`` prompts is kept as ``out_dir/chunk-{b:05d}.pt`` and reused when its
    prompts match."""
    out = []
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    for b, i in enumerate(tqdm(range(0, len(prompts), batch), desc="greedy continuations", disable=not progress)):
        x = prompts[i : i + batch]
        path = folder / f"chunk-{b:05d}.pt" if folder is not None else None
        if path is not None and path.exists():
            seq = torch.load(path, map_location="cpu", weights_only=True)
            if seq.shape != (len(x), x.shape[1] + new_tokens) or not torch.equal(seq[:, : x.shape[1]], x):
                raise ValueError(f"{path} holds other prompts or lengths; delete {folder} or pass another out_dir")
            out.append(seq)
            continue
        x = x.to(target.device)
        with torch.autocast(target.device.type, dtype=torch.bfloat16, enabled=autocast):
            seq = target.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0).cpu()
        if path is not None:
            with atomic_path(path) as tmp:
                torch.save(seq, tmp)
        out.append(seq)
    return torch.cat(out)
