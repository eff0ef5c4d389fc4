"""One model in training: its state, optimizer, learning-rate schedule, loss and step.

- ``Member``: a model being trained (spec, module, optimizer, step, tokens, time, log rows).
- Budget and schedule: ``budget_progress`` (fraction of the budget spent), ``estimated_steps``,
  ``lr_factor`` (linear warm-up, then cosine decay by budget progress; Loshchilov & Hutter 2017),
  ``set_lr``, ``scheduler_state``.
- ``new_model`` (a seeded float32 ``LlamaForCausalLM``), ``prune_into`` (its weights from the
  teacher, width-pruned), ``warmup_of``, ``make_optimizer`` (AdamW, Loshchilov &
  Hutter 2019, weight decay on matrices only), ``autocast_ctx``.
- Loss: ``teacher_targets`` (the teacher's probabilities, once per batch) and ``member_loss``
  (``kd * KL(teacher || draft) + (1 - kd) * CE``, knowledge distillation after Hinton et al. 2015).
- ``train_step`` (one optimizer step with micro-batch accumulation) and ``record_loss`` (time
  accounting and log rows).

Busy time
    A budget in minutes counts "busy minutes": the process's CPU seconds divided by its thread count,
    i.e. wall minutes of an otherwise idle machine, which a loaded or paused machine does not eat.
    The first step of each invocation compiles (``torch.compile``) and is charged to
    ``compile_seconds`` instead.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from .specs import ModelSpec, TrainSettings, llama_config


def budget_progress(spec: ModelSpec, tokens: int, busy_seconds: float) -> float:
    """Fraction of a model's budget spent: by busy minutes if it has a minute budget, else by tokens.

    Busy seconds are the process's CPU seconds divided by its thread count, i.e. wall seconds of
    an otherwise idle machine: a budget that a shared, loaded or paused machine does not eat.
    """
    if spec.budget_minutes:
        return busy_seconds / (60 * spec.budget_minutes)
    return tokens / spec.budget_tokens


def lr_factor(step: int, progress: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay (by budget progress 0..1) to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max(0.0, progress))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def estimated_steps(spec: ModelSpec, settings: TrainSettings) -> int | None:
    """Optimizer steps of a token budget (None for a minute budget)."""
    if spec.budget_minutes:
        return None
    return max(1, math.ceil(spec.budget_tokens / settings.tokens_per_step))


@dataclass
class Member:
    """A model being trained: its spec, module, optimizer state, progress and pending log rows.

    ``forward`` is the module to call (``model`` itself, or its ``torch.compile`` wrapper);
    ``budgets`` lists every budget it trained under, e.g. ``["150 min", "230 min"]``.
    """

    spec: ModelSpec
    model: torch.nn.Module
    forward: object
    optimizer: torch.optim.Optimizer
    # progress, and the time it took
    step: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0
    budgets: list = field(default_factory=list)
    # how it runs
    threads: int = 2
    compile_seconds: float = 0.0
    warm: bool = False
    # losses since the last log row, the rows not yet written, snapshots exported
    loss_sum: float = 0.0
    loss_count: int = 0
    last_loss: float = float("nan")
    rows: list = field(default_factory=list)
    snapshots_done: list = field(default_factory=list)

    @property
    def progress(self) -> float:
        """Fraction of the budget spent (>= 1 means finished)."""
        return budget_progress(self.spec, self.tokens, self.busy_seconds)

    @property
    def busy_seconds(self) -> float:
        """CPU seconds spent on this member's steps divided by the thread count."""
        return self.cpu_seconds / self.threads


def new_model(spec: ModelSpec, settings: TrainSettings, eot_id: int) -> LlamaForCausalLM:
    """A freshly initialised float32 ``LlamaForCausalLM`` for a spec (seeded by the spec's name)."""
    torch.manual_seed(settings.seed + int(hashlib.sha1(spec.name.encode()).hexdigest(), 16) % 10_000)
    model = LlamaForCausalLM(llama_config(spec, settings.vocab_size, eot_id))
    return model.float()


def make_optimizer(model, spec: ModelSpec, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (the LR is set every step by :func:`set_lr`)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr, betas=(0.9, 0.95), eps=1e-8,
    )


def warmup_of(spec: ModelSpec, settings: TrainSettings) -> int:
    """Warm-up steps of a model: its own ``warmup_steps`` if set, else the build's."""
    return settings.warmup_steps if spec.warmup_steps is None else spec.warmup_steps


def prune_into(model, spec: ModelSpec, teacher, calib_ids: torch.Tensor) -> None:
    """Overwrite ``model``'s weights with ``teacher`` width-pruned to ``spec``'s shape (Minitron,
    Muralidharan et al. 2024, arXiv:2407.14679: channels, heads and FFN neurons ranked by their
    activations on ``calib_ids`` (B, T))."""
    # at call time: importing specnb.pruning runs its healing module, which trains with this package
    from ..pruning.prune import prune_width
    small = prune_width(teacher, calib_ids, hidden_size=spec.hidden, num_heads=spec.heads, intermediate_size=spec.ffn)
    if small.config.head_dim != spec.dims_per_head:
        raise ValueError(f"{spec.name}: pruning keeps the teacher's head width {small.config.head_dim}; "
                         f"set head_dim={small.config.head_dim} in its spec (it has {spec.dims_per_head})")
    model.load_state_dict(small.state_dict())


def set_lr(member: Member, settings: TrainSettings) -> float:
    """Set the optimizer's LR from the warm-up + cosine schedule at the member's progress; return it."""
    progress = member.progress
    lr = member.spec.lr * lr_factor(member.step, progress, warmup_of(member.spec, settings), settings.min_lr_ratio)
    for group in member.optimizer.param_groups:
        group["lr"] = lr
    return lr


def scheduler_state(member: Member, settings: TrainSettings) -> dict:
    """The schedule's state as stored in a checkpoint (it is a pure function of step and progress)."""
    return {
        "kind": "linear warm-up + cosine", "peak_lr": member.spec.lr, "warmup_steps": warmup_of(member.spec, settings),
        "min_lr_ratio": settings.min_lr_ratio,
        "progress": member.progress,
        "lr": member.optimizer.param_groups[0]["lr"],
    }


def autocast_ctx(settings: TrainSettings):
    """bf16 autocast on CPU, or a no-op context."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.autocast)


def teacher_targets(teacher, x: torch.Tensor, settings: TrainSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Target probabilities ``(B, T, V)`` and per-token negative entropy ``(B, T)``, computed once per batch."""
    with torch.no_grad(), autocast_ctx(settings):
        logp = F.log_softmax(teacher(input_ids=x).logits.float(), dim=-1)
        probs = logp.exp()
        return probs, (probs * logp).sum(-1)


def member_loss(member: Member, x, y, targets, settings: TrainSettings) -> torch.Tensor:
    """CE on data, or ``kd * KL(target || draft) + (1 - kd) * CE`` when teacher targets are given.

    ``KL(t || d) = sum_v p_t (log p_t - log p_d) = -H(t) - sum_v p_t log p_d``.
    """
    with autocast_ctx(settings):
        logits = member.forward(input_ids=x).logits
    logp = F.log_softmax(logits.float().flatten(0, 1), dim=-1)
    ce = -logp.gather(1, y.reshape(-1, 1)).mean()
    if targets is None:
        return ce
    probs, neg_entropy = targets
    kl = (neg_entropy.flatten() - (probs.flatten(0, 1) * logp).sum(-1)).mean()
    return settings.kd_weight * kl + (1 - settings.kd_weight) * ce


def train_step(member: Member, batch: torch.Tensor, targets, settings: TrainSettings) -> float:
    """One optimizer step (with micro-batch accumulation); return the mean loss."""
    member.model.train()
    member.optimizer.zero_grad(set_to_none=True)
    chunks = range(0, batch.shape[0], settings.micro_batch)
    total = 0.0
    for i in chunks:
        x, y = batch[i:i + settings.micro_batch, :-1], batch[i:i + settings.micro_batch, 1:]
        t = None if targets is None else tuple(a[i:i + settings.micro_batch] for a in targets)
        loss = member_loss(member, x, y, t, settings) / len(chunks)
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(member.model.parameters(), settings.grad_clip)
    member.optimizer.step()
    member.step += 1
    member.tokens += batch.shape[0] * (batch.shape[1] - 1)
    return total


def record_loss(member: Member, loss: float, lr: float, seconds: float, cpu: float, settings: TrainSettings) -> None:
    """Charge a step's wall and CPU time to the member, accumulate its loss, and add a log row every ``log_every`` steps."""
    member.loss_sum += loss
    member.loss_count += 1
    member.last_loss = loss
    member.train_seconds += seconds
    if member.warm:
        member.cpu_seconds += cpu
    else:  # the first step of an invocation compiles: keep that out of the busy-time budget
        member.compile_seconds += cpu / member.threads
        member.warm = True
    if member.step % settings.log_every == 0 or member.progress >= 1:
        member.rows.append({
            "step": member.step, "tokens": member.tokens,
            "loss": round(member.loss_sum / member.loss_count, 5), "lr": f"{lr:.3e}",
            "tokens_per_s": round(settings.tokens_per_step / max(seconds, 1e-9), 1),
            "elapsed_min": round(member.train_seconds / 60, 2), "busy_min": round(member.busy_seconds / 60, 2),
            "val_loss": "",
        })
        member.loss_sum, member.loss_count = 0.0, 0
