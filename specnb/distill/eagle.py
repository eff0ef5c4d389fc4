"""Resumable training of an EAGLE draft (``specnb.eagle``) on stored target features.

The target's features come from ``features.extract_features`` (one pass of the target's body).
Each step draws ``batch`` windows (order and noise depend only on ``(seed, step)``), takes one AdamW
step on ``eagle.eagle_loss`` (Smooth-L1 to the next feature + ``w_cls`` x cross-entropy to the
target's next-token distribution over the head's tokens; uniform feature noise as in EAGLE
Sec. 4; over ``unroll`` drafting steps that read the draft's own predictions, EAGLE-3's
training-time test), under bf16 autocast, with linear warm-up, cosine decay to 0.1 of the rate
and gradient clipping at 0.5 (EAGLE's). Every ``eval_every`` steps it logs the held-out top-1 agreement of the
draft's argmax with the target's full-vocabulary argmax one token ahead, the acceptance a greedy
draft of k = 1 would meet. ``train_eagle`` checkpoints to ``checkpoint.pt`` in its folder and
resumes from it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from ..atomic import atomic_path, write_csv
from ..eagle import EagleDraft, eagle_loss, own_state, unrolled_features
from .train import lr_at

__all__ = ["EagleSettings", "train_eagle", "heldout_agreement"]


@dataclass(frozen=True)
class EagleSettings:
    steps: int = 800
    batch: int = 16
    lr: float = 5e-4
    warmup: int = 20
    w_cls: float = 0.1  # EAGLE's weight of the classification loss
    noise: float = 0.1  # U(-noise, noise) added to the input features (EAGLE: 0.1)
    seed: int = 0
    autocast: bool = True
    checkpoint_minutes: float = 5.0
    eval_every: int = 100
    unroll: int = 1  # drafting steps per position in the loss (eagle.unrolled_features; 1: EAGLE's teacher forcing)


def _batch_index(n: int, step: int, s: EagleSettings) -> torch.Tensor:
    """Windows of ``step``: epoch e = step * batch // n runs a permutation seeded by (seed, e)."""
    per_epoch = max(1, n // s.batch)
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(s.seed * 100_003 + epoch))
    return perm[i * s.batch : (i + 1) * s.batch]


@torch.no_grad()
def heldout_agreement(target, draft: EagleDraft, features: torch.Tensor, ids: torch.Tensor, steps: int = 1,
                      batch: int = 16) -> float | list[float]:
    """Top-1 agreement of the draft with the target's full-vocabulary argmax of the same next
    position, on held-out windows (features (n, T, H), ids (n, T)): at step 1 (fed the target's
    features), or a list for steps 1..``steps`` (step j fed its own j - 1 predictions,
    ``eagle.unrolled_features``): the acceptance of draft token j given the ones before it."""
    hits, counts = [0.0] * steps, [0] * steps
    for i in range(0, len(ids), batch):
        f, x = features[i : i + batch], ids[i : i + batch]
        goal = target.lm_head(f[:, 1:].to(target.lm_head.weight.dtype)).argmax(-1)  # (b, T-1)
        for j, pred in enumerate(unrolled_features(draft, f.to(draft.dtype), x, steps)):
            same = draft.logits(pred[:, j:]).argmax(-1) == goal[:, j:]
            hits[j] += float(same.sum())
            counts[j] += same.numel()
    rates = [h / c for h, c in zip(hits, counts)]
    return rates[0] if steps == 1 else rates


def _checkpoint(path: Path, draft: EagleDraft, optim, step: int, log: list, settings: EagleSettings) -> None:
    with atomic_path(path) as tmp:
        torch.save({"step": step, "log": log, "settings": asdict(settings), "own": own_state(draft),
                    "optim": optim.state_dict()}, tmp)


def train_eagle(target, draft: EagleDraft, features: torch.Tensor, ids: torch.Tensor, out_dir: str | Path,
                settings: EagleSettings = EagleSettings(), *, val: tuple[torch.Tensor, torch.Tensor] | None = None,
                minutes: float | None = None, until: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Train ``draft`` in place on windows of target ``features`` (n, T, H) and ``ids`` (n, T);
    resume from ``out_dir/checkpoint.pt``; stop at ``settings.steps``, or earlier after ``minutes``
    or at step ``until`` (the schedule unchanged).
    Returns the log (also ``out_dir/log.csv``): step, kind (train / eval), loss terms, top1, lr,
    seconds, tokens."""
    if features.shape[:2] != ids.shape or len(ids) < settings.batch:
        raise ValueError(f"features {tuple(features.shape)} and ids {tuple(ids.shape)} must share (n, T) with n >= batch "
                         f"({settings.batch})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    params = [p for p in draft.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.95), weight_decay=0.0)
    step, log = 0, []
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        draft.load_state_dict(state["own"], strict=False)
        optim.load_state_dict(state["optim"])
        step, log = state["step"], state["log"]
    elapsed0 = log[-1]["seconds"] if log else 0.0
    start = last_ckpt = time.time()
    deadline = start + 60 * minutes if minutes is not None else math.inf
    first = step
    bar = tqdm(total=settings.steps, initial=step, desc="eagle", unit="step", disable=not progress, dynamic_ncols=True)
    try:
        while step < min(settings.steps, until or settings.steps) and time.time() < deadline:
            idx = _batch_index(len(ids), step, settings)
            rate = lr_at(step, settings)
            for g in optim.param_groups:
                g["lr"] = rate
            draft.train()
            with torch.autocast(draft.device.type, dtype=torch.bfloat16, enabled=settings.autocast):
                loss, m = eagle_loss(draft, features[idx].to(draft.device), ids[idx].to(draft.device), w_cls=settings.w_cls,
                                     noise=settings.noise, generator=torch.Generator().manual_seed(settings.seed * 100_003 + step),
                                     steps=settings.unroll)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5)
            optim.step()
            draft.eval()
            step += 1
            log.append({"step": step, "kind": "train", "loss": loss.detach().item(), **m, "lr": rate,
                        "seconds": elapsed0 + time.time() - start, "tokens": step * settings.batch * (ids.shape[1] - 1)})
            bar.update(1)
            if val is not None and (step % settings.eval_every == 0 or step == settings.steps):
                rates = heldout_agreement(target, draft, *val, steps=settings.unroll)
                rates = rates if isinstance(rates, list) else [rates]
                log.append({"step": step, "kind": "eval", "top1": rates[0], **{f"top1_s{j}": r for j, r in enumerate(rates[1:], 2)},
                            "seconds": elapsed0 + time.time() - start, "tokens": log[-1]["tokens"]})
                bar.set_postfix(heldout_top1=f"{rates[0]:.3f}", refresh=False)
            if time.time() - last_ckpt > 60 * settings.checkpoint_minutes:
                _checkpoint(ckpt, draft, optim, step, log, settings)
                last_ckpt = time.time()
    finally:
        bar.close()
        if step > first:
            _checkpoint(ckpt, draft, optim, step, log, settings)
    frame = pd.DataFrame(log)
    write_csv(frame, out / "log.csv")
    return frame
