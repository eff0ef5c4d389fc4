"""Scoring and shipping a trained model: held-out evaluation and the export to ``ZOO/NAME``.

- ``evaluate_lm``: held-out loss, next-token accuracy, argmax predictions and, against a reference's
  predictions, top-1 agreement (the greedy acceptance rate of a one-token draft; Leviathan et al. 2023).
- ``bf16_copy``: the model with bf16 parameters, as shipped.
- ``export_model``: score the bf16 weights on validation, then write model (bf16 safetensors),
  tokenizer and ``training.json`` to ``ZOO/NAME`` as one atomic folder (``specnb.atomic.atomic_dir``);
  ``link_tokenizer``: its ``tokenizer.json`` as a link to the teacher's identical copy (one copy shipped).
- ``member_info``: the training fields of ``training.json``; ``export_snapshots``: exports
  ``NAME-stepK`` as a member passes each snapshot fraction of its budget.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from ..atomic import atomic_dir, write_json
from ..corpus import Layout
from .member import Member, autocast_ctx
from .specs import ModelSpec, TrainSettings, describe_budget
from ..corpus import heldout_windows


@torch.no_grad()
def evaluate_lm(model, tokens: np.ndarray, settings: TrainSettings, max_tokens: float | None = None, batch: int = 8,
             reference: torch.Tensor | None = None) -> dict:
    """Held-out loss and next-token accuracy on up to ``max_tokens`` of a split (``settings.eval_tokens``
    when None; ``float("inf")`` for the whole split), in windows of ``seq_len`` spread evenly over it
    (``heldout.heldout_windows``).

    Also returns ``predictions``, the ``(windows, seq_len)`` argmax tokens. Given the target's
    ``predictions`` as ``reference`` (same split and cap), adds ``agreement``: the fraction of
    positions where both argmaxes match (the greedy acceptance rate of a one-token draft).
    """

    model.eval()
    cap = settings.eval_tokens if max_tokens is None else min(max_tokens, len(tokens))
    windows = heldout_windows(tokens, seq_len=settings.seq_len, max_tokens=max(int(cap), settings.seq_len))
    loss_sum, correct, count, predictions = 0.0, 0, 0, []
    for arr in windows.split(batch):
        x, y = arr[:, :-1], arr[:, 1:]
        with autocast_ctx(settings):
            logits = model(input_ids=x).logits.float()
        loss_sum += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        predictions.append(logits.argmax(-1))
        correct += (predictions[-1] == y).sum().item()
        count += y.numel()
    metrics = {"loss": loss_sum / count, "accuracy": correct / count, "tokens": count, "predictions": torch.cat(predictions)}
    if reference is not None:
        if reference.shape != metrics["predictions"].shape:
            raise ValueError(f"reference predictions {tuple(reference.shape)} do not match this split and cap "
                             f"{tuple(metrics['predictions'].shape)}: compute them with the same tokens and max_tokens")
        metrics["agreement"] = (reference == metrics["predictions"]).float().mean().item()
    return metrics


def bf16_copy(model):
    """A copy with bf16 parameters, as exported; buffers (RoPE frequencies) stay float32 as on reload."""
    clone = copy.deepcopy(model)
    for param in clone.parameters():
        param.data = param.data.to(torch.bfloat16)
    clone.config.dtype = torch.bfloat16
    return clone


def export_model(model, name: str, spec: ModelSpec, info: dict, layout: Layout, tokenizer, val: np.ndarray, settings: TrainSettings) -> dict:
    """Evaluate the bf16-rounded weights, then save model + tokenizer + ``training.json`` to ``zoo/NAME``."""
    shipped = bf16_copy(model)
    metrics = evaluate_lm(copy.deepcopy(shipped).float(), val, settings)  # .float() is in place: evaluate a copy, ship bf16
    record = {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "layers": spec.layers, "hidden": spec.hidden, "heads": spec.heads,
        "head_dim": spec.dims_per_head, "ffn": spec.ffn, "vocab_size": settings.vocab_size,
        "teacher": spec.teacher, "group": spec.group, "init": spec.init,
        "objective": "CE" if spec.teacher is None else f"{settings.kd_weight} KL(teacher||draft) + {1 - settings.kd_weight} CE",
        **info,
        "final_val_loss": round(metrics["loss"], 5),
        "val_next_token_accuracy": round(metrics["accuracy"], 5),
        "val_tokens_evaluated": metrics["tokens"],
        "seq_len": settings.seq_len, "batch_size": settings.batch_size, "peak_lr": spec.lr,
        "weights_dtype": "bfloat16",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "exported_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with atomic_dir(layout.zoo / name) as tmp:
        shipped.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / "training.json", record)
    link_tokenizer(layout.zoo / name, layout.zoo / (spec.teacher or "target"))
    print(f"[zoo] exported {name}: val loss {record['final_val_loss']:.3f}, acc {record['val_next_token_accuracy']:.3f}", flush=True)
    return record


def link_tokenizer(model_dir: Path, source_dir: Path) -> bool:
    """Replace ``model_dir/tokenizer.json`` by a relative symlink to ``source_dir``'s byte-identical
    copy, so that the zoo ships one tokenizer file (``from_pretrained`` follows the link). Returns
    whether it linked; a missing, linked or different source leaves the file as it is."""
    mine, theirs = Path(model_dir) / "tokenizer.json", Path(source_dir) / "tokenizer.json"
    if (mine.is_symlink() or theirs.is_symlink() or not theirs.is_file() or not mine.is_file()
            or mine.resolve() == theirs.resolve() or mine.read_bytes() != theirs.read_bytes()):
        return False
    tmp = mine.with_name(mine.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(theirs, mine.parent))
    os.replace(tmp, mine)
    return True


def member_info(member: Member) -> dict:
    """Training progress fields of ``training.json``."""
    return {
        "training_steps": member.step,
        "training_tokens": member.tokens,
        "training_minutes": round(member.train_seconds / 60, 2),
        "training_busy_minutes": round(member.busy_seconds / 60, 2),
        "compile_busy_minutes": round(member.compile_seconds / 60, 2),
        "budget": describe_budget(member.spec),
        "budget_history": member.budgets,
        "tokens_per_s": round(member.tokens / max(member.train_seconds, 1e-9), 1),
        "tokens_per_busy_s": round(member.tokens / max(member.busy_seconds, 1e-9), 1),
    }


def export_snapshots(member: Member, layout: Layout, tokenizer, val, settings: TrainSettings) -> list[str]:
    """Export ``NAME-stepK`` once the member passes each snapshot fraction of its budget."""
    names = []
    for frac in member.spec.snapshots:
        if frac not in member.snapshots_done and member.progress >= frac:
            name = f"{member.spec.name}-step{member.step}"
            export_model(member.model, name, member.spec, {**member_info(member), "snapshot_of_budget": frac},
                         layout, tokenizer, val, settings)
            member.snapshots_done.append(frac)
            names.append(name)
    return names
