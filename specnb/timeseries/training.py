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
from .model import PatchTransformer, TSConfig, instance_norm, scaled_config

__all__ = ["TS_DIR", "MODELS", "TRAIN_PATCHES", "save_model", "load_model", "train"]

TS_DIR = DATA / "ts"

# name -> keyword arguments of ``train``. Seed 001's progression: 0.7x on ETTh1 only vs 0.7x
# pre-trained on ETTh2 (the larger dataset available offline) then fine-tuned on ETTh1 at half
# the learning rate.
MODELS: dict[str, dict] = {
    "target": dict(scale=1.0, dataset="ETTh1", epochs=5, lr=1e-3),
    "draft_0.7x": dict(scale=0.7, dataset="ETTh1", epochs=5, lr=1e-3),
    "draft_0.5x": dict(scale=0.5, dataset="ETTh1", epochs=5, lr=1e-3),
    "draft_0.25x": dict(scale=0.25, dataset="ETTh1", epochs=5, lr=1e-3),
    "draft_0.01x": dict(scale=0.01, dataset="ETTh1", epochs=3, lr=3e-3),
    "draft_0.7x_etth2": dict(scale=0.7, dataset="ETTh2", epochs=5, lr=1e-3),
    "draft_0.7x_ft": dict(scale=0.7, dataset="ETTh1", epochs=3, lr=5e-4, init="draft_0.7x_etth2"),
}
for _preset in MODELS.values():
    _preset.setdefault("steps_per_epoch", 100)  # 100 x 128 random windows per epoch: CPU-sized
TRAIN_PATCHES = CONTEXT // PATCH + math.ceil(max(HORIZONS) / PATCH)  # context + longest horizon, in patches


def _loss(model: PatchTransformer, windows: torch.Tensor, from_token: int = 0) -> torch.Tensor:
    """Next-patch MSE on the scaled data (de-normalised), windows (B, T); instance norm from the
    first CONTEXT points. Predictions of tokens >= ``from_token`` count."""
    p = model.cfg.patch
    ctx = windows[:, : min(CONTEXT, windows.shape[1] - p)]
    _, mean, std = instance_norm(ctx)
    z = ((windows - mean) / std).view(len(windows), -1, p)  # (B, N, P)
    pred = model(z[:, :-1])[:, from_token:] * std[:, :, None] + mean[:, :, None]
    truth = windows.view(len(windows), -1, p)[:, 1 + from_token:]
    return F.mse_loss(pred, truth)


def save_model(model: PatchTransformer, directory: str | Path, meta: Mapping) -> None:
    """model.safetensors (weights) and train.json (config + ``meta``), each written atomically."""
    directory = Path(directory)
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    info = {"config": dataclasses.asdict(model.cfg), "params": count_parameters(model), **meta}
    write_json(directory / "train.json", info)


def load_model(name: str, directory: str | Path | None = None) -> tuple[PatchTransformer, dict]:
    """(model in eval mode, train.json) from data/ts/NAME (or ``directory``/NAME)."""
    folder = Path(directory or TS_DIR) / name
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no weights in {folder}; train them with: python -m specnb.timeseries train {name}")
    info = json.loads((folder / "train.json").read_text())
    model = PatchTransformer(TSConfig(**info["config"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), info


def _train_epoch(model: PatchTransformer, opt, sched, windows: torch.Tensor, steps: int, batch_size: int,
                 desc: str, progress: bool) -> float:
    """``steps`` optimiser steps on random windows (drawn from torch's global generator), clipped
    at gradient norm 1; the mean training loss."""
    order = torch.randperm(len(windows))[: steps * batch_size]
    total = 0.0
    for i in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        loss = _loss(model, windows[order[i * batch_size:(i + 1) * batch_size]])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        total += loss.item()
    return total / steps


def _val_loss(model: PatchTransformer, windows: torch.Tensor) -> float:
    """Mean validation loss over the forecast tokens only (those after the context)."""
    model.eval()
    with torch.no_grad():
        val = float(np.mean([float(_loss(model, w, CONTEXT // PATCH - 1)) for w in torch.split(windows, 1024)]))
    model.train()
    return val


def train(name: str, *, scale: float = 1.0, dataset: str = "ETTh1", epochs: int = 6, lr: float = 1e-3,
          init: str | None = None, batch_size: int = 128, seed: int = 0, steps_per_epoch: int | None = None,
          base: TSConfig | None = None, directory: str | Path | None = None, data_dir: str | Path | None = None,
          progress: bool = True) -> dict:
    """Train (or resume) model NAME: AdamW, cosine schedule, next-patch MSE over TRAIN_PATCHES-patch
    windows of the train split (from ``init``'s weights if given, else a ``scaled_config(scale, base)``
    model), best epoch by validation loss. A checkpoint is saved atomically after every epoch and
    removed when done. Returns the train.json dict."""
    folder = Path(directory or TS_DIR) / name
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "checkpoint.pt"
    torch.manual_seed(seed)
    split = split_ett(load_ett(dataset, data_dir))
    length = TRAIN_PATCHES * PATCH
    train_w = make_windows(split["train"], length)  # (n * C, length)
    val_w = make_windows(split["val"], length, stride=8)
    if init:
        model, _ = load_model(init, directory)
        model.train()
    else:
        model = PatchTransformer(scaled_config(scale, base)).train()
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
        loss = _train_epoch(model, opt, sched, train_w, steps, batch_size, desc, progress)
        val = _val_loss(model, val_w)
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
    meta = {"name": name, "dataset": dataset, "init": init, "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "steps_per_epoch": steps, "seed": seed, "train_windows": len(train_w), "window_points": length,
            "best_val_loss": state["best"], "history": state["history"], "train_seconds": round(state["seconds"], 1),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    save_model(model.eval(), folder, meta)
    ckpt.unlink(missing_ok=True)
    return json.loads((folder / "train.json").read_text())
