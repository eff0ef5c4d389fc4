"""Healing a pruned model: a short distillation from the model it was cut from, with the zoo's loss.

``heal`` trains the pruned model for a few steps on ``kd * KL(teacher || student) + (1 - kd) * CE``
(``specnb.zoo.teacher_targets`` and ``member_loss``), the "pruning + distillation" recipe of
Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge
Distillation", arXiv:2407.14679). ``distillation_kl`` measures KL(teacher || student) per token.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from tqdm import tqdm

from specnb.zoo import (Member, ModelSpec, TrainSettings, WindowStream, lr_factor, make_optimizer, member_loss,
                        teacher_targets, train_step)

from .layout import check_llama, dims

__all__ = ["distillation_kl", "heal"]


def _settings(batch: int, seq_len: int, kd_weight: float, vocab_size: int):
    """Zoo training settings for one (batch, seq_len) shape: no compile, autocast or warm-up."""
    return TrainSettings(seq_len=seq_len, batch_size=batch, micro_batch=batch, kd_weight=kd_weight,
                         compile=False, autocast=False, vocab_size=vocab_size, warmup_steps=0)


def _targets(teacher, x: torch.Tensor, device, settings):
    """The teacher's distillation targets for ``x`` (B, T), moved to the student's ``device``."""
    probs, neg_entropy = teacher_targets(teacher, x.to(teacher.device), settings)
    return probs.to(device), neg_entropy.to(device)


@torch.no_grad()
def distillation_kl(student, teacher, batch: torch.Tensor) -> float:
    """Mean KL(teacher || student) per token on ``batch`` (B, T), via the zoo's loss with kd = 1."""
    settings = _settings(batch.shape[0], batch.shape[1], 1.0, student.config.vocab_size)
    x = batch.to(student.device)
    y = torch.zeros_like(x)  # CE is weighted 0
    member = Member(spec=None, model=student, forward=student, optimizer=None)
    return float(member_loss(member, x, y, _targets(teacher, x, student.device, settings), settings))


def _token_stream(tokens, vocab: int, seq_len: int) -> np.ndarray:
    """``tokens`` as a flat integer array, checked to be in the vocabulary and long enough for windows."""
    arr = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
    arr = arr.reshape(-1)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integer token ids (a 1-D stream, e.g. a zoo split); got dtype {arr.dtype}")
    if len(arr) < 2 * seq_len + 2:
        raise ValueError(f"tokens has {len(arr)} ids, too few for windows of seq_len={seq_len}; "
                         f"give at least {2 * seq_len + 2} or lower seq_len")
    if int(arr.min()) < 0 or int(arr.max()) >= vocab:
        raise ValueError(f"tokens hold ids outside the vocabulary [0, {vocab}); tokenize with the model's own tokenizer")
    return arr


def heal(student, teacher, tokens, *, steps: int | None = 100, minutes: float | None = None, lr: float = 3e-4,
         batch: int = 8, seq_len: int = 128, kd_weight: float = 0.5, warmup: int | None = None, seed: int = 0,
         progress: bool = True) -> dict:
    """Distill ``student`` (trained in place) from ``teacher`` on windows of a 1-D token stream.

    Loss per step: ``kd_weight * KL(teacher || student) + (1 - kd_weight) * CE`` (the zoo's
    ``member_loss``), AdamW (``zoo.make_optimizer``), linear warm-up then cosine decay to 0.1 lr
    (``zoo.lr_factor``), gradient clipping at 1. Stops after ``steps`` or ``minutes``, whichever
    comes first. Returns ``{"step", "loss", "lr"}`` lists, ``kl_start`` / ``kl_end`` (KL on one fixed
    batch of windows), ``seconds`` and ``tokens``. The student is left in eval mode; the teacher
    is only read (pass it in eval mode).
    """
    check_llama(student)
    if steps is None and minutes is None:
        raise ValueError("give steps or minutes (or both) to bound healing")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be > 0; got {minutes!r}")
    if not 0 <= kd_weight <= 1:
        raise ValueError(f"kd_weight must be in [0, 1] (1: pure KL to the teacher, 0: pure LM loss); got {kd_weight!r}")
    if teacher.config.vocab_size != student.config.vocab_size:
        raise ValueError(f"student and teacher vocabularies differ ({student.config.vocab_size} vs "
                         f"{teacher.config.vocab_size}); heal a model pruned from this teacher")
    stream = WindowStream(_token_stream(tokens, student.config.vocab_size, seq_len), seq_len, batch, seed)
    settings = _settings(batch, seq_len, kd_weight, student.config.vocab_size)
    n = dims(student)
    spec = ModelSpec("pruned", n["layers"], n["hidden"], n["heads"], n["intermediate"], "pruned",
                     budget_tokens=(steps or 1) * batch * seq_len, lr=lr, teacher="teacher", head_dim=n["head_dim"])
    member = Member(spec, student, student, make_optimizer(student, spec, settings))
    warmup = warmup if warmup is not None else max(1, (steps or 100) // 10)
    probe = WindowStream(stream.tokens, seq_len, batch, seed + 1).batch(0)[:, :-1]
    kl_start = distillation_kl(student, teacher, probe)
    history = {"step": [], "loss": [], "lr": []}
    start = time.time()
    deadline = start + 60 * minutes if minutes else math.inf
    bar = tqdm(total=steps, disable=not progress, desc="heal", unit="step", dynamic_ncols=True)
    try:
        while (steps is None or member.step < steps) and time.time() < deadline:
            done = member.step / steps if steps else (time.time() - start) / (60 * minutes)
            rate = lr * lr_factor(member.step, done, warmup, 0.1)
            for g in member.optimizer.param_groups:
                g["lr"] = rate
            x = stream.batch(member.step).to(student.device)  # (B, T + 1)
            loss = train_step(member, x, _targets(teacher, x[:, :-1], student.device, settings), settings)
            history["step"].append(member.step)
            history["loss"].append(loss)
            history["lr"].append(rate)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    finally:
        bar.close()
        student.eval()
    history.update(kl_start=kl_start, kl_end=distillation_kl(student, teacher, probe),
                   seconds=time.time() - start, tokens=member.tokens)
    return history
