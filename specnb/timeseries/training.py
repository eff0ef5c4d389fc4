"""Training, saving and loading the preset ``PatchTransformer``s of ``MODELS``.

``train`` fits one model with next-patch MSE on windows of the ETT train split (AdamW, cosine
schedule, best epoch by validation loss), resumable from an atomic checkpoint written after every
epoch; the result is data/ts/NAME/model.safetensors plus data/ts/NAME/train.json (config, data,
schedule, losses, seconds). ``python -m specnb.timeseries train`` (``cli``) trains the presets.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..atomic import atomic_path, write_json
from ..paths import DATA
from .data import CONTEXT, HORIZONS, PATCH, load_ett, make_windows, split_ett
from ..models import count_parameters
from .model import PatchEnsemble, PatchTransformer, TSConfig, instance_norm, scaled_config

__all__ = ["TS_DIR", "MODELS", "TRAIN_PATCHES", "save_model", "load_model", "train", "train_ensemble"]

TS_DIR = DATA / "ts"

# name -> keyword arguments of ``train`` (``train_ensemble`` when "members" is given), in training order.
# - target: a deep ensemble of 7 identical models (seeds 0-6) on the ETTh1 + ETTh2 train splits
#   (Lakshminarayanan et al., NeurIPS 2017), so that it forecasts better than the drafts distilled from it.
# - drafts: width-scaled single models distilled from the target (they fit its forecasts, not the data).
# - seed 001's progression: a 2-layer 0.7x pre-trained for 15 epochs on ETTh2 (our offline stand-in for
#   the seed's Electricity), then fine-tuned on ETTh1 at the seed's learning rate 5e-5, both distilled.
MODELS: dict[str, dict] = {
    "target": dict(members=7, scale=1.0, dataset="ETTh1+ETTh2", epochs=8, lr=1e-3, dropout=0.1),
    "draft_0.7x": dict(scale=0.7, dataset="ETTh1", epochs=5, lr=1e-3, teacher="target"),
    "draft_0.5x": dict(scale=0.5, dataset="ETTh1", epochs=5, lr=1e-3, teacher="target"),
    "draft_0.25x": dict(scale=0.25, dataset="ETTh1", epochs=5, lr=1e-3, teacher="target"),
    "draft_0.1x": dict(scale=0.1, dataset="ETTh1", epochs=5, lr=3e-3, teacher="target"),
    "draft_0.01x": dict(scale=0.01, dataset="ETTh1", epochs=5, lr=3e-3, teacher="target"),
    "draft_0.7x_etth2": dict(scale=0.7, layers=2, dataset="ETTh2", epochs=15, lr=1e-3, teacher="target"),
    "draft_0.7x_ft": dict(scale=0.7, dataset="ETTh1", epochs=5, lr=5e-5, init="draft_0.7x_etth2", teacher="target"),
}
for _preset in MODELS.values():
    _preset.setdefault("steps_per_epoch", 100)  # 100 x 128 random windows per epoch: CPU-sized
TRAIN_PATCHES = CONTEXT // PATCH + math.ceil(max(HORIZONS) / PATCH)  # context + longest horizon, in patches


def _loss(model: PatchTransformer, windows: torch.Tensor, from_token: int = 0,
          teacher: PatchTransformer | None = None) -> torch.Tensor:
    """Next-patch MSE on the scaled data (de-normalised), windows (B, T); instance norm from the
    first CONTEXT points. Predictions of tokens >= ``from_token`` count. The reference is the next
    patch, or with a ``teacher`` the teacher's prediction of it (distillation: a draft learns to
    agree with its target, which is what acceptance measures; Zhou et al., DistillSpec, ICLR 2024)."""
    p = model.cfg.patch
    ctx = windows[:, : min(CONTEXT, windows.shape[1] - p)]
    _, mean, std = instance_norm(ctx)
    z = ((windows - mean) / std).view(len(windows), -1, p)  # (B, N, P)
    pred = model(z[:, :-1])[:, from_token:] * std[:, :, None] + mean[:, :, None]
    if teacher is None:
        ref = windows.view(len(windows), -1, p)[:, 1 + from_token:]
    else:
        with torch.no_grad():
            ref = teacher(z[:, :-1])[:, from_token:] * std[:, :, None] + mean[:, :, None]
    return F.mse_loss(pred, ref)


def save_model(model: PatchTransformer, directory: str | Path, meta: Mapping) -> None:
    """model.safetensors (weights) and train.json (config + ``meta``), each written atomically."""
    directory = Path(directory)
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    info = {"config": dataclasses.asdict(model.cfg), "params": count_parameters(model), **meta}
    if isinstance(model, PatchEnsemble):
        info["members"] = [dataclasses.asdict(m.cfg) for m in model.members]
    write_json(directory / "train.json", info)


def load_model(name: str, directory: str | Path | None = None) -> tuple[PatchTransformer, dict]:
    """(model in eval mode, train.json) from data/ts/NAME (or ``directory``/NAME)."""
    folder = Path(directory or TS_DIR) / name
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no weights in {folder}; train them with: python -m specnb.timeseries train {name}")
    info = json.loads((folder / "train.json").read_text())
    if "members" in info:
        model = PatchEnsemble([PatchTransformer(TSConfig(**c)) for c in info["members"]])
    else:
        model = PatchTransformer(TSConfig(**info["config"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), info


def _train_epoch(model: PatchTransformer, opt, sched, windows: torch.Tensor, steps: int, batch_size: int,
                 desc: str, progress: bool, teacher: PatchTransformer | None = None) -> float:
    """``steps`` optimiser steps on random windows (drawn from torch's global generator), clipped
    at gradient norm 1; the mean training loss."""
    order = torch.randperm(len(windows))[: steps * batch_size]
    total = 0.0
    for i in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        loss = _loss(model, windows[order[i * batch_size:(i + 1) * batch_size]], teacher=teacher)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        total += loss.item()
    return total / steps


def _val_loss(model: PatchTransformer, windows: torch.Tensor, teacher: PatchTransformer | None = None) -> float:
    """Mean validation loss over the forecast tokens only (those after the context)."""
    model.eval()
    with torch.no_grad():
        val = float(np.mean([float(_loss(model, w, CONTEXT // PATCH - 1, teacher)) for w in torch.split(windows, 1024)]))
    model.train()
    return val


def train_ensemble(name: str, *, members: int, seed: int = 0, directory: str | Path | None = None,
                   progress: bool = True, **kwargs) -> dict:
    """Train ``members`` models NAME.m0, NAME.m1, ... with ``train(**kwargs)`` and seeds seed,
    seed + 1, ... (each resumable), then save their ``PatchEnsemble`` as NAME and remove the
    member folders. Returns NAME's train.json dict (member histories and summed seconds)."""
    if members < 2:
        raise ValueError(f"an ensemble needs members >= 2; got {members} (use train for one model)")
    root = Path(directory or TS_DIR)
    infos = [train(f"{name}.m{i}", seed=seed + i, directory=root, progress=progress, **kwargs) for i in range(members)]
    model = PatchEnsemble([load_model(f"{name}.m{i}", root)[0] for i in range(members)])
    first = {k: v for k, v in infos[0].items() if k not in ("config", "params", "history", "best_val_loss", "train_seconds", "seed", "name")}
    val_w = make_windows(split_ett(load_ett(kwargs.get("dataset", "ETTh1").split("+")[0], kwargs.get("data_dir")))["val"],
                         TRAIN_PATCHES * PATCH, stride=8)
    meta = {**first, "name": name, "seeds": [seed + i for i in range(members)],
            "best_val_loss": _val_loss(model, val_w),  # the ensemble's own, on the first dataset's validation windows
            "member_val_losses": [i["best_val_loss"] for i in infos], "history": [i["history"] for i in infos],
            "train_seconds": round(sum(i["train_seconds"] for i in infos), 1)}
    save_model(model.eval(), root / name, meta)
    for i in range(members):
        shutil.rmtree(root / f"{name}.m{i}")
    return json.loads((root / name / "train.json").read_text())


def train(name: str, *, scale: float = 1.0, dataset: str = "ETTh1", epochs: int = 6, lr: float = 1e-3,
          init: str | None = None, batch_size: int = 128, seed: int = 0, steps_per_epoch: int | None = None,
          layers: int | None = None, dropout: float | None = None, teacher: str | None = None, base: TSConfig | None = None,
          directory: str | Path | None = None, data_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Train (or resume) model NAME: AdamW, cosine schedule, next-patch MSE over TRAIN_PATCHES-patch
    windows of the train split of ``dataset`` ("ETTh1", or "ETTh1+ETTh2" to pool the train splits, each
    scaled by its own train statistics), from ``init``'s weights if given, else a ``scaled_config(scale,
    base)`` model with ``layers`` blocks and ``dropout`` (each defaults to ``base``'s); best epoch by
    validation loss on the first dataset named. With ``teacher`` (a trained model's name) the model
    is distilled: it fits the teacher's next-patch predictions instead of the data, in training and
    validation. A checkpoint is saved atomically after every epoch and removed when done. Returns
    the train.json dict."""
    folder = Path(directory or TS_DIR) / name
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "checkpoint.pt"
    torch.manual_seed(seed)
    names = dataset.split("+")
    splits = [split_ett(load_ett(n, data_dir)) for n in names]
    length = TRAIN_PATCHES * PATCH
    train_w = torch.cat([make_windows(sp["train"], length) for sp in splits])  # (n * C, length), every dataset
    val_w = make_windows(splits[0]["val"], length, stride=8)  # validation on the first dataset named
    if init:
        model, _ = load_model(init, directory)
        model.train()
    else:
        base = base or TSConfig()
        base = dataclasses.replace(base, n_layers=base.n_layers if layers is None else layers,
                                   dropout=base.dropout if dropout is None else dropout)
        model = PatchTransformer(scaled_config(scale, base)).train()
    mentor = load_model(teacher, directory)[0] if teacher else None
    steps = steps_per_epoch or math.ceil(len(train_w) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    state = {"epoch": 0, "history": [], "best": math.inf, "best_state": None, "seconds": 0.0}
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        model.load_state_dict(saved["model"]), opt.load_state_dict(saved["opt"]), sched.load_state_dict(saved["sched"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
    for epoch in range(state["epoch"], epochs):
        start = time.perf_counter()
        desc = f"{name} epoch {epoch + 1}/{epochs}"
        loss = _train_epoch(model, opt, sched, train_w, steps, batch_size, desc, progress, mentor)
        val = _val_loss(model, val_w, mentor)
        state["history"].append({"epoch": epoch + 1, "train_loss": loss, "val_loss": val})
        if val < state["best"]:
            state["best"], state["best_state"] = val, {k: v.clone() for k, v in model.state_dict().items()}
        state["epoch"], state["seconds"] = epoch + 1, state["seconds"] + time.perf_counter() - start
        with atomic_path(ckpt) as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "rng": torch.get_rng_state(), "state": state}, tmp)
        if progress:
            print(f"{name}: epoch {epoch + 1}/{epochs} train {loss:.4f} val {val:.4f}", flush=True)
    model.load_state_dict(state["best_state"])
    meta = {"name": name, "dataset": dataset, "init": init, "teacher": teacher, "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "steps_per_epoch": steps, "seed": seed, "train_windows": len(train_w), "window_points": length,
            "best_val_loss": state["best"], "history": state["history"], "train_seconds": round(state["seconds"], 1),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    save_model(model.eval(), folder, meta)
    ckpt.unlink(missing_ok=True)
    return json.loads((folder / "train.json").read_text())
