"""Training the zoo: groups of models that share one batch and one teacher pass per step.

- ``build``: check the size budget, prepare the corpus, then train every unfinished group in
  order (``specs.training_groups``); ``acquire_build_lock``: one build per zoo at a time.
- ``train_group``: the training loop of one group until every member is finished, a time or step
  bound runs out, or a signal arrives; members are checkpointed every
  ``settings.checkpoint_minutes`` and on exit, and exported once they spend their budget.
- Helpers of the loop: ``resolve_budget`` (``budget_like``), ``load_teacher``,
  ``allow_recompiles`` (dynamo's cache limit), ``group_by_step``, ``step_together`` (one step of
  the members at one step count), ``checkpoint_all``.
- Signals: ``STOP``, ``request_stop``, ``install_signal_handlers`` (SIGTERM / first Ctrl-C:
  checkpoint and exit; a second Ctrl-C interrupts).
- ``measure_speed``: training tokens/s of one config, without touching checkpoints.

Every model resumes from ``ZOO/.checkpoints/NAME/ckpt.pt``. The loop runs in float32 with
``torch.set_num_threads(settings.threads)``, AdamW, cosine LR with warm-up, ``torch.compile`` and
batches of ``batch_size`` x ``seq_len`` tokens (``specs.TrainSettings``).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from dataclasses import asdict, replace

import torch
import torch._dynamo.config as dynamo_config
from tqdm import tqdm
from transformers import AutoModelForCausalLM

from .checkpoint import flush_log, init_member, is_finished, save_checkpoint
from ..corpus import EOT, Layout, hash_file, load_split, load_corpus_tokenizer, prepare_corpus
from .export import evaluate_lm, export_model, export_snapshots, member_info
from .member import Member, make_optimizer, new_model, prune_into, record_loss, set_lr, teacher_targets, train_step
from .specs import ModelSpec, TrainSettings, budget_table, check_budget, format_table, training_groups
from .stream import WindowStream

STOP = {"requested": False}


def request_stop(signum, frame) -> None:
    """Signal handler: ask the training loop to checkpoint and exit; a second Ctrl-C interrupts."""
    if STOP["requested"] and signum == signal.SIGINT:
        raise KeyboardInterrupt
    STOP["requested"] = True
    print(f"\n[zoo] signal {signum}: checkpointing and exiting", flush=True)


def install_signal_handlers() -> None:
    """Route SIGTERM and SIGINT to :func:`request_stop` (main thread only)."""
    STOP["requested"] = False
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def resolve_budget(spec: ModelSpec, layout: Layout) -> ModelSpec:
    """Turn ``budget_like=X`` into X's actual training tokens (X must be finished)."""
    if not spec.budget_like:
        return spec
    record = layout.zoo / spec.budget_like / "training.json"
    if not record.exists():
        raise RuntimeError(f"{spec.name} trains on as many tokens as {spec.budget_like}: build {spec.budget_like} first")
    tokens = json.loads(record.read_text())["training_tokens"]
    return replace(spec, budget_tokens=tokens, budget_minutes=None)


def load_teacher(layout: Layout, name: str):
    """The finished teacher, loaded float32 from its export, frozen."""
    if not is_finished(layout, name):
        raise RuntimeError(f"teacher {name!r} is not finished; build it first (python -m specnb.zoo build --only {name})")
    model = AutoModelForCausalLM.from_pretrained(str(layout.zoo / name), dtype=torch.float32)
    model.eval().requires_grad_(False)
    return model


def allow_recompiles(models: int, graphs_per_model: int = 4) -> int:
    """Raise dynamo's per-code-object recompile limit so that ``models`` compiled copies of one
    architecture all stay compiled; return the limit now in force (it is never lowered).

    Every ``torch.compile``-d Llama shares ``LlamaForCausalLM.forward``, whose cache holds
    ``torch._dynamo.config.recompile_limit`` graphs (8 by default); past that limit, further models
    fall back to eager silently (``torch._dynamo hit config.recompile_limit``) and train slower.
    """
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, models * graphs_per_model)
    dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 4 * dynamo_config.recompile_limit)
    return dynamo_config.recompile_limit


def group_by_step(members: list[Member]) -> dict[int, list[Member]]:
    """Members keyed by their current step (members at the same step share one batch and teacher pass)."""
    out: dict[int, list[Member]] = {}
    for m in members:
        out.setdefault(m.step, []).append(m)
    return out


def step_together(group: list[Member], step: int, stream: WindowStream, teacher, layout: Layout, tokenizer, val,
                  settings: TrainSettings) -> list[str]:
    """One optimizer step of every member at ``step``: one batch, one teacher pass shared by the
    distilled members, the step's whole wall and CPU time charged to each member; flush their log
    rows and export the snapshots they passed. Returns the snapshot names exported."""
    t0, c0 = time.time(), time.process_time()
    batch = stream.batch(step)
    targets = teacher_targets(teacher, batch[:, :-1], settings) if teacher is not None else None
    results = [(m, set_lr(m, settings)) for m in group]
    results = [(m, lr, train_step(m, batch, targets if m.spec.teacher else None, settings)) for m, lr in results]
    seconds, cpu = time.time() - t0, time.process_time() - c0
    exported = []
    for m, lr, loss in results:
        record_loss(m, loss, lr, seconds, cpu, settings)
        flush_log(m, layout)
        exported += export_snapshots(m, layout, tokenizer, val, settings)
    return exported


def train_group(specs: list[ModelSpec], layout: Layout, settings: TrainSettings, minutes: float | None = None, max_steps: int | None = None) -> list[str]:
    """Train a group of models together until finished, ``minutes`` or ``max_steps`` run out, or a signal.

    Members at the same step train together (:func:`step_together`). Returns the names exported now.
    """
    todo = [resolve_budget(s, layout) for s in specs if not is_finished(layout, s.name)]
    if not todo:
        return []
    torch.set_num_threads(settings.threads)
    tokenizer = load_corpus_tokenizer(layout.tokenizer_dir)
    tok_sha = hash_file(layout.tokenizer_dir / "tokenizer.json")
    eot_id = tokenizer.convert_tokens_to_ids(EOT)
    stream = WindowStream(load_split(layout, "train"), settings.seq_len, settings.batch_size, settings.seed)
    val = load_split(layout, "validation")
    teachers = {s.teacher for s in todo if s.teacher}
    if len(teachers) > 1:
        raise ValueError(f"a group shares one teacher, got {sorted(teachers)}")
    teacher = load_teacher(layout, teachers.pop()) if teachers else None
    if settings.compile:
        allow_recompiles(len(todo) + 1)
    members = [init_member(s, layout, settings, eot_id, tok_sha) for s in todo]
    for m in members:
        if m.spec.init == "pruned" and m.step == 0:  # a fresh start: the teacher, pruned to this shape
            prune_into(m.model, m.spec, teacher, stream.batch(0)[:, :-1])
    if settings.compile and teacher is not None:
        teacher = torch.compile(teacher)
    exported: list[str] = []
    start = time.time()
    deadline = start + 60 * minutes if minutes else float("inf")
    last_ckpt = time.time()
    steps_done = 0
    names = ",".join(m.spec.name for m in members)
    bar = tqdm(total=100.0, initial=round(100 * min(m.progress for m in members), 2), desc=names[:40],
               unit="%", dynamic_ncols=True, mininterval=30, file=sys.stdout,
               bar_format="{desc} {percentage:5.1f}%|{bar}| [{elapsed}<{remaining}] {postfix}")
    try:
        while members and not STOP["requested"] and time.time() < deadline and (max_steps is None or steps_done < max_steps):
            for step, group in group_by_step(members).items():
                exported += step_together(group, step, stream, teacher, layout, tokenizer, val, settings)
            steps_done += 1
            bar.n = round(100 * min(1.0, min(m.progress for m in members)), 2)
            bar.set_postfix_str(f"step {members[0].step} " + " ".join(f"{m.spec.name}={m.last_loss:.3f}" for m in members), refresh=False)
            bar.update(0)
            for m in [m for m in members if m.progress >= 1]:
                save_checkpoint(m, layout, stream, tok_sha, settings)
                exported.append(m.spec.name)
                export_model(m.model, m.spec.name, m.spec, member_info(m), layout, tokenizer, val, settings)
                members.remove(m)
            if members and time.time() - last_ckpt > 60 * settings.checkpoint_minutes:
                checkpoint_all(members, layout, stream, tok_sha, val, settings)
                last_ckpt = time.time()
    finally:
        bar.close()
        if members:
            checkpoint_all(members, layout, stream, tok_sha, None, settings)
    return exported


def checkpoint_all(members: list[Member], layout: Layout, stream: WindowStream, tok_sha: str, val, settings: TrainSettings) -> None:
    """Checkpoint every member; with ``val`` given, also log a quick validation loss (4 windows)."""
    for m in members:
        if val is not None:
            m.rows.append({
                "step": m.step, "tokens": m.tokens, "loss": "", "lr": "", "tokens_per_s": "",
                "elapsed_min": round(m.train_seconds / 60, 2), "busy_min": round(m.busy_seconds / 60, 2),
                "val_loss": round(evaluate_lm(m.model, val, settings, max_tokens=4 * settings.seq_len)["loss"], 5),
            })
        save_checkpoint(m, layout, stream, tok_sha, settings)
        print(f"[zoo] checkpoint {m.spec.name} at step {m.step}, {m.tokens:,} tokens, {m.train_seconds / 60:.1f} min wall, "
              f"{m.busy_seconds / 60:.1f} busy min "
              f"({100 * m.progress:.1f}% of budget)", flush=True)


def build(layout: Layout, specs: list[ModelSpec], settings: TrainSettings, only: str | None = None,
          minutes: float | None = None, max_steps: int | None = None) -> list[str]:
    """Check the budget, prepare the corpus, then train every unfinished group in order; return exported names."""
    rows = budget_table(specs, settings.vocab_size)
    print(format_table(rows), flush=True)
    check_budget(rows)
    print(f"[zoo] settings: {asdict(settings)}", flush=True)
    prepare_corpus(layout, settings.vocab_size)
    install_signal_handlers()
    deadline = time.time() + 60 * minutes if minutes else None
    exported: list[str] = []
    for group in training_groups(specs, only):
        left = None if deadline is None else (deadline - time.time()) / 60
        if (left is not None and left <= 0) or STOP["requested"]:
            break
        exported += train_group(group, layout, settings, left, max_steps)
        if any(not is_finished(layout, s.name) for s in group):
            break
    return exported


def acquire_build_lock(layout: Layout):
    """Hold an exclusive lock on the zoo's checkpoints for this process, so two builds never train the same model.

    Returns the open lock file (the lock lasts while it stays open); exits if another build holds it.
    """
    layout.checkpoints.mkdir(parents=True, exist_ok=True)
    handle = (layout.checkpoints / ".build.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        raise SystemExit(f"another build is running on {layout.zoo} (pid {handle.read().strip() or '?'}); "
                         "wait for it or stop it (kill -TERM PID checkpoints and exits)")
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def measure_speed(spec: ModelSpec, layout: Layout, settings: TrainSettings, steps: int = 3) -> float:
    """Training tokens/s of a spec (after one warm-up/compile step), without touching checkpoints."""
    torch.set_num_threads(settings.threads)
    tokenizer = load_corpus_tokenizer(layout.tokenizer_dir)
    stream = WindowStream(load_split(layout, "train"), settings.seq_len, settings.batch_size, settings.seed)
    model = new_model(spec, settings, tokenizer.convert_tokens_to_ids(EOT))
    member = Member(spec, model, torch.compile(model) if settings.compile else model, make_optimizer(model, spec, settings))
    t0 = time.time()
    train_step(member, stream.batch(0), None, settings)
    print(f"[zoo] warm-up step {time.time() - t0:.1f}s", flush=True)
    t0 = time.time()
    for s in range(1, steps + 1):
        train_step(member, stream.batch(s), None, settings)
    rate = steps * settings.tokens_per_step / (time.time() - t0)
    print(f"[zoo] {spec.name}: {rate:,.0f} tokens/s (compile={settings.compile}, autocast={settings.autocast}, "
          f"micro_batch={settings.micro_batch})", flush=True)
    return rate
