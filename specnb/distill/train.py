"""Resumable distillation of several drafts from one target, one teacher pass per batch.

Loss per student and token: ``KL(p_t || p_s)`` over the head's tokens ``S`` (the subset the
drafts' ``SubsetHead`` keeps), ``p_t = softmax(W_S h_t)`` from the target's last hidden state and
``p_s = softmax(W_S h_s)`` from the student's, i.e. the white-box KD of DistillSpec (Zhou et al.
2024, arXiv:2310.08461) restricted to FR-Spec's vocabulary. The teacher's body runs once per batch
under bf16 autocast; each student then takes one AdamW step (linear warm-up, cosine decay to 0.1
of the rate, gradient clipping at 1), its embedding and head frozen.

``distill`` stops at ``settings.steps`` or after ``minutes``, checkpointing every
``settings.checkpoint_minutes`` (and on stop) to ``checkpoint.pt`` in its folder: the students'
own weights, optimizer states, the step, and the log. Called again on the same folder it resumes
where it stopped; the batch of each step depends only on ``(seed, step)`` (``WindowStream``).
Every ``settings.eval_every`` steps it logs each student's held-out KL and its top-1 agreement with
the target's full-vocabulary argmax (the greedy acceptance a draft can reach).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..atomic import atomic_path, write_csv
from ..zoo.stream import WindowStream
from ..shallow import SubsetHead, own_state

__all__ = ["DistillSettings", "distill", "held_out_metrics"]


@dataclass(frozen=True)
class DistillSettings:
    steps: int = 1200
    batch: int = 8
    seq_len: int = 256
    lr: float = 1e-3
    warmup: int = 30
    weight_decay: float = 0.0
    seed: int = 0
    autocast: bool = True  # bf16 on CPU / CUDA
    checkpoint_minutes: float = 5.0
    eval_every: int = 50


def _autocast(model, enabled: bool):
    return torch.autocast(model.device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def _subset_logprobs(model, head: SubsetHead, x: torch.Tensor, autocast: bool) -> torch.Tensor:
    with _autocast(model, autocast):
        hidden = model.model(input_ids=x).last_hidden_state  # (B, T, H), after the final norm
        logits = head.subset_logits(hidden)  # (B, T, N)
    return F.log_softmax(logits.float(), dim=-1)


def _kl(logp_t: torch.Tensor, logp_s: torch.Tensor) -> torch.Tensor:
    return (logp_t.exp() * (logp_t - logp_s)).sum(-1).mean()


def lr_at(step: int, s) -> float:
    """Linear warm-up over ``s.warmup`` steps, then cosine decay to 0.1 of ``s.lr`` at ``s.steps``."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = min(1.0, (step - s.warmup) / max(1, s.steps - s.warmup))
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def held_out_metrics(target, students: dict, windows: torch.Tensor, autocast: bool = True) -> dict[str, dict]:
    """name -> {kl, top1}: KL(target || student) over the subset and top-1 agreement with the
    target's full-vocabulary argmax, on held-out ``windows`` (n, T)."""
    head = next(iter(students.values())).lm_head
    with _autocast(target, autocast):
        hidden = target.model(input_ids=windows).last_hidden_state.float()
    logp_t = F.log_softmax(head.subset_logits(hidden), dim=-1)
    top_t = target.lm_head(hidden).argmax(-1)
    out = {}
    for name, s in students.items():
        logp_s = _subset_logprobs(s, s.lm_head, windows, autocast)
        out[name] = {"kl": float(_kl(logp_t, logp_s)), "top1": float((s.lm_head.ids[logp_s.argmax(-1)] == top_t).float().mean())}
    return out


def _checkpoint(path: Path, students: dict, optims: dict, step: int, log: list, settings: DistillSettings) -> None:
    state = {"step": step, "log": log, "settings": asdict(settings),
             "students": {n: {"own": own_state(m), "optim": optims[n].state_dict()} for n, m in students.items()}}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def distill(target, students: dict, tokens, out_dir: str | Path, settings: DistillSettings = DistillSettings(), *,
            val_windows: torch.Tensor | None = None, minutes: float | None = None, until: int | None = None,
            progress: bool = True) -> pd.DataFrame:
    """Train ``students`` (name -> draft sharing ``target``'s embedding and a ``SubsetHead`` on the
    same ids) in place; resume from ``out_dir/checkpoint.pt`` if present. ``minutes`` / ``until``
    stop early (after that long / at that step) without changing the schedule. Returns the log (also
    written to ``out_dir/log.csv``): step, student, loss, lr, seconds, tokens, and eval rows."""
    if not students:
        raise ValueError("give at least one student draft")
    heads = [s.lm_head for s in students.values()]
    if not all(isinstance(h, SubsetHead) for h in heads) or any(not torch.equal(h.ids, heads[0].ids) for h in heads):
        raise ValueError("every student needs a SubsetHead over the same token ids (shallow_draft(..., vocab_ids=ids))")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    optims = {n: torch.optim.AdamW([p for p in s.parameters() if p.requires_grad], lr=settings.lr,
                                   weight_decay=settings.weight_decay) for n, s in students.items()}
    step, log = 0, []
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if set(state["students"]) != set(students):
            raise ValueError(f"{ckpt} holds {sorted(state['students'])}, not {sorted(students)}; use another out_dir")
        for n, s in students.items():
            s.load_state_dict(state["students"][n]["own"], strict=False)
            optims[n].load_state_dict(state["students"][n]["optim"])
        step, log = state["step"], state["log"]
    stream = WindowStream(tokens, settings.seq_len, settings.batch, settings.seed)
    elapsed0 = log[-1]["seconds"] if log else 0.0
    start = time.time()
    last_ckpt = start
    deadline = start + 60 * minutes if minutes is not None else math.inf
    first_step = step
    bar = tqdm(total=settings.steps, initial=step, desc="distill", unit="step", disable=not progress, dynamic_ncols=True)
    try:
        while step < min(settings.steps, until or settings.steps) and time.time() < deadline:
            x = stream.batch(step)[:, :-1].to(target.device)  # (B, T)
            with torch.no_grad():
                logp_t = _subset_logprobs(target, heads[0], x, settings.autocast)
            rate = lr_at(step, settings)
            for name, s in students.items():
                s.train()
                for g in optims[name].param_groups:
                    g["lr"] = rate
                loss = _kl(logp_t, _subset_logprobs(s, s.lm_head, x, settings.autocast))
                optims[name].zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for p in s.parameters() if p.requires_grad], 1.0)
                optims[name].step()
                s.eval()
                log.append({"step": step, "student": name, "kind": "train", "loss": loss.item(), "lr": rate,
                            "seconds": elapsed0 + time.time() - start, "tokens": (step + 1) * x.numel()})
            step += 1
            bar.update(1)
            if val_windows is not None and (step % settings.eval_every == 0 or step == settings.steps):
                for name, m in held_out_metrics(target, students, val_windows, settings.autocast).items():
                    log.append({"step": step, "student": name, "kind": "eval", "loss": m["kl"], "top1": m["top1"],
                                "seconds": elapsed0 + time.time() - start, "tokens": step * x.numel()})
                bar.set_postfix({n: f"{r['loss']:.2f}/{r['top1']:.2f}" for n, r in
                                 ((r["student"], r) for r in log[-len(students):])}, refresh=False)
            if time.time() - last_ckpt > 60 * settings.checkpoint_minutes:
                _checkpoint(ckpt, students, optims, step, log, settings)
                last_ckpt = time.time()
    finally:
        bar.close()
        if step > first_step:
            _checkpoint(ckpt, students, optims, step, log, settings)
    frame = pd.DataFrame(log)
    write_csv(frame, out / "log.csv")
    return frame
