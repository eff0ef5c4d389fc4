"""Resumable training state on disk: checkpoints, loss logs, and which models are finished.

- Paths: ``checkpoint_path`` (``ZOO/.checkpoints/NAME/ckpt.pt``), ``log_path``
  (``ZOO/.checkpoints/NAME/log.csv``); ``is_finished``: a model is finished once its export has
  a ``training.json``.
- Loss log: ``LOG_FIELDS``, ``write_log`` (append or rewrite), ``trim_log`` (drop rows past the
  last checkpoint, so a resume never duplicates them), ``flush_log`` (a member's pending rows).
- ``init_member``: a new member, resumed from its checkpoint if one exists (model, optimizer,
  step, tokens, time, snapshots, budgets, torch RNG; the data position follows from the step).
- ``save_checkpoint``: the same state, written atomically (``specnb.atomic.atomic_path``).
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..corpus import Layout
from .member import Member, make_optimizer, new_model, scheduler_state
from .specs import ModelSpec, TrainSettings, describe_budget
from .stream import WindowStream

LOG_FIELDS = ["step", "tokens", "loss", "lr", "tokens_per_s", "elapsed_min", "busy_min", "val_loss"]


def checkpoint_path(layout: Layout, name: str) -> Path:
    """Path of a model's resumable checkpoint."""
    return layout.checkpoints / name / "ckpt.pt"


def log_path(layout: Layout, name: str) -> Path:
    """Path of a model's loss log."""
    return layout.checkpoints / name / "log.csv"


def is_finished(layout: Layout, name: str) -> bool:
    """A model is finished once its export (with ``training.json``) exists."""
    return (layout.zoo / name / "training.json").exists()


def trim_log(path: Path, step: int) -> None:
    """Drop log rows beyond ``step`` (written after the last checkpoint) so a resume never duplicates them."""
    if not path.exists():
        return
    with path.open() as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
    write_log(path, rows, mode="w")


def write_log(path: Path, rows: list[dict], mode: str = "a") -> None:
    """Append (or rewrite) rows of the loss log, writing the header to a new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = mode == "w" or not path.exists()
    with path.open(mode, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def flush_log(member: Member, layout: Layout) -> None:
    """Append the member's pending log rows to its log.csv."""
    if member.rows:
        write_log(log_path(layout, member.spec.name), member.rows)
        member.rows = []


def init_member(spec: ModelSpec, layout: Layout, settings: TrainSettings, eot_id: int, tokenizer_sha: str) -> Member:
    """Build a member, resuming model/optimizer/scheduler/progress/RNG from its checkpoint if any.

    A checkpoint of another tokenizer or architecture is refused. Fields missing from a checkpoint
    get defaults: ``cpu_seconds`` = wall seconds x threads, no compile time, no snapshots, and the
    budget the checkpoint's spec names. A budget differing from the last one recorded (a new run,
    or one extended with ``--budget-minutes``) is appended to ``member.budgets``.
    """
    model = new_model(spec, settings, eot_id)
    member = Member(spec, model, model, make_optimizer(model, spec, settings), threads=settings.threads,
                    warm=not settings.compile)
    path = checkpoint_path(layout, spec.name)
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["tokenizer_sha256"] != tokenizer_sha:
            raise RuntimeError(f"{path} was trained with another tokenizer; delete it to start {spec.name} over")
        arch = ("layers", "hidden", "heads", "ffn", "head_dim")
        if any(state["spec"][k] != getattr(spec, k) for k in arch):
            raise RuntimeError(f"{path} has a different architecture than {spec.name}; delete it to start over")
        model.load_state_dict(state["model"])
        member.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        member.step, member.tokens, member.train_seconds = state["step"], state["tokens"], state["train_seconds"]
        member.cpu_seconds = state.get("cpu_seconds", member.train_seconds * member.threads)
        member.compile_seconds = state.get("compile_seconds", 0.0)
        member.snapshots_done = list(state.get("snapshots_done", []))
        saved = replace(spec, **{k: state["spec"].get(k) for k in ("budget_tokens", "budget_minutes", "budget_like")})
        member.budgets = list(state.get("budgets", [describe_budget(saved)]))
        print(f"[zoo] {spec.name}: resumed at step {member.step} ({100 * member.progress:.1f}% of budget)", flush=True)
    if not member.budgets or member.budgets[-1] != describe_budget(spec):
        member.budgets.append(describe_budget(spec))
    trim_log(log_path(layout, spec.name), member.step)
    if settings.compile:
        member.forward = torch.compile(model)
    return member


def save_checkpoint(member: Member, layout: Layout, stream: WindowStream, tokenizer_sha: str, settings: TrainSettings) -> None:
    """Flush the member's log rows, then write its checkpoint atomically."""
    path = checkpoint_path(layout, member.spec.name)
    flush_log(member, layout)
    state = {
        "spec": asdict(member.spec),
        "model": member.model.state_dict(),
        "optimizer": member.optimizer.state_dict(),
        "scheduler": scheduler_state(member, settings),
        "step": member.step,
        "tokens": member.tokens,
        "train_seconds": member.train_seconds,
        "cpu_seconds": member.cpu_seconds,
        "compile_seconds": member.compile_seconds,
        "snapshots_done": member.snapshots_done,
        "budgets": member.budgets,
        "data": stream.position(member.step),
        "torch_rng": torch.get_rng_state(),
        "tokenizer_sha256": tokenizer_sha,
        "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
