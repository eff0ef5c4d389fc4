"""What the zoo holds: model specs, build settings, ladders, configs, and the size budget.

- ``ModelSpec``: one model (architecture, group, teacher, budget, learning rate, snapshots).
- ``TrainSettings``: settings shared by every model of one build.
- ``zoo_specs``: the real zoo; ``WIDTH_LADDER`` / ``DEPTH_LADDER``: its draft ladders;
  ``kind_of``: what a draft is, from its name; ``training_info``: an exported model's ``training.json``.
- ``llama_config`` / ``spec_parameters``: the ``LlamaConfig`` of a spec and its exact parameter count.
- ``training_groups``: build order (teacher first, then every distilled draft as one group);
  ``extend_budget``: one model's busy-minute budget raised, to train it on.
- Size budget: ``shipped_models``, ``describe_budget``, ``budget_table``, ``format_table``,
  ``check_budget`` (raises ``BudgetError``) against ``MAX_TOTAL_BYTES`` / ``MAX_FILE_BYTES``.

Models (see ``python -m specnb.zoo table`` for shapes, parameters and bf16 sizes)
    ``target`` (Llama architecture, Touvron et al. 2023: 12 layers, d_model 416); a width ladder
    at depth 12 that scales d_model, FFN and heads (``w0.7``, ``w0.5``, ``w0.25``, ``w0.1``, and
    ``p0.01`` with ~1% of the target's parameters), each rung the target width-pruned to its shape
    (Minitron, Muralidharan et al. 2024) before distillation, so that a wider rung keeps more of the
    target and size is what orders the ladder; a depth ladder at about equal parameters
    (``d1``, ``d2``, ``d4``, ``d8``); ``d2-data`` (d2 trained on data alone); and snapshots of
    ``w0.1`` along its distillation (``w0.1-stepK``); a shallow ladder of one layer at widths 64, 128,
    208 (``d1``) and 416 (``s64``, ``s128``, ``s416``), where a draft's latency is mostly its
    embedding and head, so that the size curve reaches drafts that can pay on a CPU. Drafts are distilled from the finished target
    with ``0.5 * KL(target || draft) + 0.5 * CE`` (knowledge distillation, Hinton et al. 2015);
    all distilled drafts train as one group, so one target forward per batch serves them all.
    Every distilled draft sees the same 1,368,064 tokens (334 steps of the same batches; the depth
    ladder's 75-minute group bought that many).
    The size budget (all weights <= 120 MB in bf16, no file > 95 MB) is checked before training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .. import models
from ..paths import ZOO
from ..corpus import MAX_POSITIONS, VOCAB_SIZE

MAX_TOTAL_BYTES = 120_000_000
#: the tokens every distilled draft trains on: 334 steps of 8 x 512, what the ladders' 75-minute group bought
MATCHED_TOKENS = 1_368_064
MAX_FILE_BYTES = 95_000_000

#: the zoo's ladders, as notebooks 02-05 use them (largest first)
WIDTH_LADDER = ("w0.7", "w0.5", "w0.25", "w0.1", "p0.01")
DEPTH_LADDER = ("d1", "d2", "d4", "d8")
#: one decoder layer at widths from ~64 to the target's: the drafts that can pay on a CPU (d1 is its 208 rung)
SHALLOW_LADDER = ("s416", "d1", "s128", "s64")


class BudgetError(ValueError):
    """The zoo's configs would exceed the size cap on shipped weights."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo: architecture, training group, teacher, budget and learning rate.

    The budget is ``budget_minutes`` of training (busy minutes of its group, shared by all members)
    if set, else ``budget_tokens``; ``budget_like="d2"`` means the tokens that model d2 trained on.
    ``snapshots`` are budget fractions at which the model is also exported as ``NAME-stepK``.
    ``init`` is "random" (a seeded initialisation) or "pruned": the teacher narrowed to this shape
    by Minitron width pruning (``specnb.pruning.prune_width``), then distilled. ``warmup_steps``
    overrides the build's warm-up (``TrainSettings.warmup_steps``) for this model.
    """

    name: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    group: str
    budget_tokens: int | None
    lr: float
    teacher: str | None = None
    head_dim: int | None = None
    snapshots: tuple[float, ...] = ()
    budget_minutes: float | None = None
    budget_like: str | None = None
    init: str = "random"
    warmup_steps: int | None = None

    def __post_init__(self):
        if self.init not in ("random", "pruned"):
            raise ValueError(f"{self.name}: init must be 'random' or 'pruned' (the teacher, width-pruned); got {self.init!r}")
        if self.init == "pruned" and not self.teacher:
            raise ValueError(f"{self.name}: init='pruned' prunes the teacher: give it one (teacher='target')")

    @property
    def dims_per_head(self) -> int:
        """Attention head width (defaults to hidden // heads)."""
        return self.head_dim or self.hidden // self.heads


@dataclass(frozen=True)
class TrainSettings:
    """Settings shared by all models of one build (the defaults are the real zoo's).

    ``autocast`` (bf16 on CPU) is off: on CPUs without native bf16 matrix instructions
    (AVX512-BF16 or AMX) bf16 matmuls run far slower than float32. ``compile`` is on:
    ``torch.compile`` fuses the memory-bound element-wise ops.
    """

    seq_len: int = 512
    batch_size: int = 8
    micro_batch: int = 8
    seed: int = 1234
    # optimisation: linear warm-up, cosine decay to min_lr_ratio (Loshchilov & Hutter), AdamW, clipping
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # distillation: loss = (1 - kd_weight) * CE + kd_weight * KL(teacher || student) (Hinton et al. 2015)
    kd_weight: float = 0.5
    eval_tokens: int = 65_536
    checkpoint_minutes: float = 9.0
    log_every: int = 5
    compile: bool = True
    autocast: bool = False
    vocab_size: int = VOCAB_SIZE
    threads: int = 2

    @property
    def tokens_per_step(self) -> int:
        """Training tokens per optimizer step."""
        return self.seq_len * self.batch_size


def zoo_specs() -> list[ModelSpec]:
    """The real zoo (see ``python -m specnb.zoo table``).

    Budgets are "busy minutes" (process CPU time / 2 threads, i.e. minutes of an idle 2-core
    machine), because throughput on a shared machine varies with load. The target trains 260;
    the depth ladder's drafts train together for 75 (one shared target forward per batch, so they
    all see the same tokens); every other distilled draft trains on as many tokens
    (``MATCHED_TOKENS``), the width ladder from the target pruned to its shape (``init="pruned"``);
    ``d2-data`` sees as many tokens as ``d2``.

    A model can be trained on past its budget with ``build --only NAME --budget-minutes M``
    (:func:`extend_budget`); its ``training.json`` lists every budget it trained under
    (``budget_history``). A fresh ``build`` trains each over one cosine of the budget here.
    """
    target = ModelSpec("target", 12, 416, 8, 1024, "target", None, 1.5e-3, head_dim=52, budget_minutes=260)
    draft = dict(budget_tokens=None, teacher="target", budget_minutes=75)
    # the width ladder: the target pruned to each width (Minitron: hidden channels, heads and FFN
    # neurons ranked by activation), keeping its head width 52, then distilled on the matched tokens
    pruned = dict(budget_tokens=MATCHED_TOKENS, teacher="target", head_dim=52, init="pruned", warmup_steps=20)
    width = [
        ModelSpec("w0.7", 12, 288, 6, 640, "width", lr=1e-3, **pruned),
        ModelSpec("w0.5", 12, 208, 4, 512, "width", lr=1e-3, **pruned),
        ModelSpec("w0.25", 12, 104, 2, 256, "width", lr=2e-3, **pruned),
        ModelSpec("w0.1", 12, 48, 1, 96, "width", lr=3e-3, snapshots=(0.05, 0.15, 0.4), **pruned),
        ModelSpec("p0.01", 12, 32, 1, 64, "width", lr=3e-3, **pruned),
    ]
    depth = [
        ModelSpec("d1", 1, 208, 4, 576, "depth", lr=3e-3, head_dim=52, **(draft | {"budget_minutes": None, "budget_tokens": MATCHED_TOKENS})),
        ModelSpec("d2", 2, 160, 4, 432, "depth", lr=3e-3, head_dim=40, **draft),
        ModelSpec("d4", 4, 128, 2, 352, "depth", lr=3e-3, head_dim=64, **draft),
        ModelSpec("d8", 8, 96, 2, 256, "depth", lr=3e-3, head_dim=48, **draft),
    ]
    matched = dict(budget_tokens=MATCHED_TOKENS, teacher="target")
    shallow = [
        ModelSpec("s416", 1, 416, 8, 1024, "shallow", lr=3e-3, head_dim=52, **matched),
        ModelSpec("s128", 1, 128, 4, 352, "shallow", lr=3e-3, head_dim=32, **matched),
        ModelSpec("s64", 1, 64, 2, 176, "shallow", lr=3e-3, head_dim=32, **matched),
    ]
    data_only = [replace(depth[1], name="d2-data", group="data", teacher=None, budget_minutes=None, budget_like="d2")]
    return [target, *width, *depth, *shallow, *data_only]


def kind_of(name: str) -> str:
    """What a draft is, from its zoo (or ``pruning.pruned_name``) name: "target", "width ladder",
    "depth ladder", "shallow ladder" (d1 counts as depth), "training snapshot", "data only", "pruned" or "other"."""
    name = name.removeprefix("zoo/")
    if name == "target":
        return "target"
    if "-step" in name:
        return "training snapshot"
    if name.endswith("-data"):
        return "data only"
    if name.startswith(("depth-", "width-")):
        return "pruned" + (" + healed" if name.endswith("+heal") else "")
    if name in WIDTH_LADDER:
        return "width ladder"
    if name in DEPTH_LADDER:
        return "depth ladder"
    if name in SHALLOW_LADDER:
        return "shallow ladder"
    return "other"


def training_info(name: str, zoo: str | Path | None = None) -> dict:
    """The ``training.json`` a zoo model was exported with (params, shape, objective, training tokens
    and minutes); ``{}`` for a name that is not an exported zoo model (e.g. a pruned draft)."""
    path = Path(zoo or ZOO) / name.removeprefix("zoo/") / "training.json"
    return json.loads(path.read_text()) if path.exists() else {}


def llama_config(spec: ModelSpec, vocab_size: int, eot_id: int = 0) -> LlamaConfig:
    """The ``LlamaConfig`` of a spec: tied embeddings, MHA, RoPE, ``MAX_POSITIONS`` positions."""
    return models.llama_config(hidden=spec.hidden, layers=spec.layers, heads=spec.heads, ffn=spec.ffn, vocab_size=vocab_size,
                               head_dim=spec.dims_per_head, max_positions=MAX_POSITIONS, bos_token_id=eot_id,
                               eos_token_id=eot_id, pad_token_id=eot_id)


def spec_parameters(spec: ModelSpec, vocab_size: int = VOCAB_SIZE) -> int:
    """Exact parameter count of a spec's model (tied embeddings counted once), built on the meta device."""
    return models.count_parameters(llama_config(spec, vocab_size))


def training_groups(specs: list[ModelSpec], only: str | None = None) -> list[list[ModelSpec]]:
    """Build order: teachers first, then all drafts of a teacher as ONE group, then data-only models.

    Training every distilled draft together means one target forward per batch serves them all.
    ``only`` picks one model name, a group name (target, width, depth, data) or ``drafts``
    (every distilled model).
    """
    if only:
        picked = [s for s in specs if s.name == only]
        picked = picked or [s for s in specs if s.group == only or (only == "drafts" and s.teacher)]
        if not picked:
            names = [s.name for s in specs] + sorted({s.group for s in specs}) + ["drafts"]
            raise SystemExit(f"unknown model or group {only!r}; choose from {names}")
        return [picked]
    teachers = {s.teacher for s in specs if s.teacher}
    groups = [[s] for s in specs if s.name in teachers]
    by_teacher: dict[str, list[ModelSpec]] = {}
    for s in specs:
        if s.teacher:
            by_teacher.setdefault(s.teacher, []).append(s)
    groups += list(by_teacher.values())
    rest = [s for s in specs if not s.teacher and s.name not in teachers]
    return groups + ([rest] if rest else [])


def extend_budget(specs: list[ModelSpec], name: str, minutes: float) -> list[ModelSpec]:
    """``specs`` with model ``name``'s budget set to ``minutes`` busy minutes, to train it on.

    A model trained to a 150-min budget and resumed with 230 re-enters its cosine schedule at
    progress 150/230 (the learning rate rises again, then decays to the floor by the new budget).
    Its export must be moved aside first: an exported model counts as finished.
    """
    if minutes <= 0:
        raise ValueError(f"--budget-minutes must be > 0; got {minutes}")
    if not any(s.name == name for s in specs):
        raise ValueError(f"--budget-minutes needs --only naming one model; {name!r} is not one of {[s.name for s in specs]}")
    return [replace(s, budget_minutes=minutes, budget_tokens=None, budget_like=None) if s.name == name else s for s in specs]


# --------------------------------------------------------------------------------------------
# Size budget
# --------------------------------------------------------------------------------------------


def shipped_models(specs: list[ModelSpec]) -> list[tuple[str, ModelSpec]]:
    """Every exported model directory: each spec plus its snapshot models ``NAME-stepK``."""
    out = []
    for spec in specs:
        out.append((spec.name, spec))
        out.extend((f"{spec.name}-step@{frac:.0%}", spec) for frac in spec.snapshots)
    return out


def describe_budget(spec: ModelSpec) -> str:
    """Short text of a spec's training budget."""
    if spec.budget_like:
        return f"= {spec.budget_like} tok"
    if spec.budget_minutes:
        return f"{spec.budget_minutes:g} min"
    return f"{spec.budget_tokens:,} tok"


def budget_table(specs: list[ModelSpec], vocab_size: int = VOCAB_SIZE) -> list[dict]:
    """One row per shipped model: architecture, parameters and bf16 bytes."""
    target_params = None
    rows = []
    for name, spec in shipped_models(specs):
        params = spec_parameters(spec, vocab_size)
        if spec.name == "target" and target_params is None:
            target_params = params
        rows.append({
            "name": name, "layers": spec.layers, "hidden": spec.hidden, "heads": spec.heads,
            "head_dim": spec.dims_per_head, "ffn": spec.ffn, "params": params,
            "bytes_bf16": 2 * params,
            "budget": describe_budget(spec),
            "teacher": spec.teacher or "-", "group": spec.group,
        })
    for row in rows:
        row["x_target"] = row["params"] / target_params if target_params else float("nan")
    return rows


def format_table(rows: list[dict]) -> str:
    """Render the budget table as fixed-width text with a total line."""
    head = f"{'name':<14}{'layers':>6}{'hidden':>7}{'heads':>6}{'hd':>4}{'ffn':>6}{'params':>12}{'x tgt':>7}{'MB bf16':>9}{'budget':>15}  teacher"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['name']:<14}{r['layers']:>6}{r['hidden']:>7}{r['heads']:>6}{r['head_dim']:>4}{r['ffn']:>6}"
            f"{r['params']:>12,}{r['x_target']:>7.3f}{r['bytes_bf16'] / 1e6:>9.2f}{r['budget']:>15}  {r['teacher']}"
        )
    total = sum(r["bytes_bf16"] for r in rows)
    lines.append(f"{'TOTAL':<14}{'':>29}{sum(r['params'] for r in rows):>12,}{'':>7}{total / 1e6:>9.2f}")
    return "\n".join(lines)


def check_budget(rows: list[dict], max_total: int = MAX_TOTAL_BYTES, max_file: int = MAX_FILE_BYTES) -> int:
    """Raise :class:`BudgetError` if the bf16 weights exceed the caps; return the total bytes."""
    total = sum(r["bytes_bf16"] for r in rows)
    too_big = [r["name"] for r in rows if r["bytes_bf16"] > max_file]
    if too_big:
        raise BudgetError(f"models over the per-file cap of {max_file / 1e6:.0f} MB in bf16: {too_big}")
    if total > max_total:
        raise BudgetError(
            f"zoo weights total {total / 1e6:.1f} MB in bf16, over the cap of {max_total / 1e6:.0f} MB: "
            "shrink the depth ladder or drop snapshots (never the target below 25 M parameters)"
        )
    return total


def zoo_shaped_models(names: Iterable[str] | None = None, seed: int = 0) -> dict:
    """Random-init models with the exact configurations of the zoo (``zoo_specs``).
    Latency does not depend on the weights' values, so timing studies need not wait for training."""
    specs = {s.name: s for s in zoo_specs()}
    names = list(names) if names is not None else list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown zoo models {unknown}; choose from {', '.join(specs)}")
    out = {}
    for n in names:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out[n] = LlamaForCausalLM(llama_config(specs[n], VOCAB_SIZE)).eval()
    return out
