"""The target's last hidden states over a token stream, stored once for training feature drafts.

An EAGLE draft (``specnb.eagle``) learns from pairs (feature f_p, next token x_{p+1}) -> f_{p+1},
where f is the target's last hidden state after its final norm (what its head reads). The target's
body is the expensive part of that training, so it runs once: ``extract_features`` walks
non-overlapping windows of ``seq_len`` tokens, runs the target's body under bf16 autocast, and
appends each chunk of windows to ``out_dir`` as ``chunk-NNNNN.pt`` (features bf16 (n, T, H), ids
int64 (n, T)), written atomically. Called again on the same folder it skips the chunks present, so
an interrupted extraction resumes. ``load_features`` concatenates them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_path

__all__ = ["extract_features", "load_features"]


def _windows(tokens, seq_len: int) -> torch.Tensor:
    arr = np.asarray(tokens, dtype=np.int64).reshape(-1)
    n = len(arr) // seq_len
    if n < 1:
        raise ValueError(f"{len(arr)} tokens hold no window of {seq_len}; give more tokens or a shorter seq_len")
    return torch.from_numpy(arr[: n * seq_len].reshape(n, seq_len))


@torch.no_grad()
def extract_features(target, tokens, out_dir: str | Path, *, seq_len: int = 256, batch: int = 8, chunk: int = 64,
                     autocast: bool = True, progress: bool = True) -> Path:
    """Write the target's normed last hidden states of every ``seq_len`` window of ``tokens`` to
    ``out_dir`` in chunks of ``chunk`` windows; resumes after the last chunk written."""
    if chunk % batch:
        raise ValueError(f"chunk ({chunk}) must be a multiple of batch ({batch})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    windows = _windows(tokens, seq_len)
    n_chunks = -(-len(windows) // chunk)
    bar = tqdm(total=len(windows) * seq_len, desc="target features", unit="tok", unit_scale=True, disable=not progress,
               dynamic_ncols=True)
    start = time.time()
    for c in range(n_chunks):
        path = out / f"chunk-{c:05d}.pt"
        ids = windows[c * chunk : (c + 1) * chunk]
        if path.exists():
            bar.update(ids.numel())
            continue
        feats = []
        for b in range(0, len(ids), batch):
            x = ids[b : b + batch].to(target.device)
            with torch.autocast(target.device.type, dtype=torch.bfloat16, enabled=autocast):
                feats.append(target.model(input_ids=x).last_hidden_state.to(torch.bfloat16).cpu())  # (b, T, H)
            bar.update(x.numel())
        with atomic_path(path) as tmp:
            torch.save({"features": torch.cat(feats), "ids": ids.clone(), "seconds": time.time() - start}, tmp)
    bar.close()
    return out


def load_features(folder: str | Path, max_windows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (n, T, H) bf16, ids (n, T) int64) of every chunk in ``folder``, in order."""
    paths = sorted(Path(folder).glob("chunk-*.pt"))
    if not paths:
        raise ValueError(f"no feature chunks in {folder}; run extract_features (python -m specnb.distill eagle) first")
    feats, ids, n = [], [], 0
    for p in paths:
        d = torch.load(p, map_location="cpu", weights_only=True)
        feats.append(d["features"])
        ids.append(d["ids"])
        n += len(d["ids"])
        if max_windows is not None and n >= max_windows:
            break
    f, i = torch.cat(feats), torch.cat(ids)
    return (f[:max_windows], i[:max_windows]) if max_windows is not None else (f, i)
