"""``python -m specnb.distill COMMAND``: train the drafts of a pretrained target in the background.

- ``train``: distill the drafts of ``FAMILIES`` (resumable; run it again to continue), then export;
  ``--only NAME[,NAME]`` trains some of them alone, on the same batches.
- ``export``: write each student of the checkpoint to ``data/drafts/FAMILY/NAME.safetensors``.
- ``status``: the last held-out KL and top-1 agreement of each student.
- ``eagle``: the EAGLE draft (``specnb.eagle``): the target's features over the training text
  (stored once, resumable), then resumable training; then the target's own greedy continuations of
  documented stdlib functions (``onpolicy``, kept per batch, resumable) and more steps on them, each
  over ``--unroll`` drafting steps (``eagle.unrolled_features``); export to
  ``data/drafts/FAMILY/eagle.safetensors``.

Training text is the train split of the standard-library corpus (``specnb.corpus``): code and
its English docstrings, none of it a HumanEval or chat prompt of notebook 07.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from ..corpus import corpus_tokens, heldout_windows
from ..packaged import cache_dir
from ..paths import DATA
from ..shallow import DraftSpec, frequent_tokens, save_draft, shallow_draft
from .eagle import EagleSettings, heldout_agreement, train_eagle
from .features import extract_features, load_features
from .narrow import width_pruned_draft
from .onpolicy import function_prompts, greedy_continuations
from .train import DistillSettings, distill

#: family -> (target, drafts). A "block influence" draft keeps the len(layers) layers of highest Block
#: Influence, chosen at train time. ``w4-bi`` is d2-bi's width-pruned twin of equal parameters (seed 004):
#: four such layers, each with 2 of 3 KV heads (6 of 9 query heads) and 682 of 1,536 FFN neurons:
#: 7,077,888 own parameters against d2-bi's 7,080,192.
FAMILIES = {"smollm2": ("HuggingFaceTB/SmolLM2-135M-Instruct",
                        [DraftSpec("d1", (0,)), DraftSpec("d2", (0, 1)), DraftSpec("d2-bi", (0, 1), "block influence"),
                         DraftSpec("w4-bi", (0, 1, 2, 3), "block influence", kv_heads=2, intermediate=682)])}


def drafts_dir(family: str) -> Path:
    return DATA / "drafts" / family


def work_dir(family: str) -> Path:
    return cache_dir() / "distill" / family


def _setup(family: str, vocab: int, train_tokens: int, only: list[str] | None = None):
    from ..models import load_model, load_tokenizer
    from ..pruning import activation_importance, block_importance

    name, specs = FAMILIES[family]
    unknown = sorted(set(only or ()) - {s.name for s in specs})
    if unknown:
        raise SystemExit(f"--only: no draft named {', '.join(unknown)} in family {family!r}; choose from "
                         f"{', '.join(s.name for s in specs)}")
    specs = [s for s in specs if not only or s.name in only]
    target = load_model(name)
    for p in target.parameters():
        p.requires_grad_(False)
    tok = load_tokenizer(name)
    tokens = corpus_tokens(tok, split="train", max_tokens=train_tokens)
    ids = frequent_tokens(tokens, vocab, target.config.vocab_size, always=tuple(tok.all_special_ids))
    val = heldout_windows(corpus_tokens(tok, split="validation", max_tokens=40_000), seq_len=256, max_tokens=4096)[:, :-1]
    calib = torch.as_tensor(tokens[: 8 * 256]).view(8, 256)  # the first training windows
    influence = block_importance(target, calib) if any(s.init == "block influence" for s in specs) else None
    resolved = [dataclasses.replace(s, layers=tuple(sorted(influence.topk(len(s.layers)).indices.tolist())))
                if s.init == "block influence" else s for s in specs]
    scores = activation_importance(target, calib) if any(s.narrowed for s in resolved) else None
    students = {s.name: width_pruned_draft(target, s.layers, ids, kv_heads=s.kv_heads, intermediate=s.intermediate, scores=scores)
                if s.narrowed else shallow_draft(target, s.layers, ids) for s in resolved}
    return name, target, tokens, ids, val, resolved, students


def export(out_dir: Path, name: str, specs, students: dict, log: pd.DataFrame, settings: DistillSettings, vocab: int) -> list[Path]:
    """Write every student with its training record."""
    out = []
    for spec in specs:
        train = log[(log.student == spec.name) & (log.kind == "train")]
        ev = log[(log.student == spec.name) & (log.kind == "eval")]
        record = {"steps": int(train.step.max() + 1) if len(train) else 0, "tokens": int(train.tokens.max()) if len(train) else 0,
                  "minutes": round(float(log.seconds.max()) / 60, 1) if len(log) else 0.0, "vocab_subset": vocab,
                  "heldout_kl": float(ev.loss.iloc[-1]) if len(ev) else None, "heldout_top1": float(ev.top1.iloc[-1]) if len(ev) else None,
                  "settings": {k: v for k, v in vars(settings).items()}, "data": "stdlib corpus, train split"}
        out.append(save_draft(students[spec.name], out_dir / f"{spec.name}.safetensors", spec=spec,
                              target_name=name, record=record))
    return out


def eagle(family: str, *, vocab: int, train_tokens: int, steps: int, minutes: float | None, work: Path, out: Path,
          on_policy: int = 2752, on_policy_steps: int = 500, unroll: int = 3) -> Path:
    """Features, training and export of the family's EAGLE draft; every stage resumes. After the
    stdlib stage, ``on_policy`` prompts' greedy continuations by the target (128 tokens each) and
    ``on_policy_steps`` more steps on them (0: none), each over ``unroll`` drafting steps."""
    from ..eagle import EagleDraft, save_eagle
    from ..models import load_model, load_tokenizer

    name = FAMILIES[family][0]
    target = load_model(name)
    for p in target.parameters():
        p.requires_grad_(False)
    tok = load_tokenizer(name)
    ids = frequent_tokens(corpus_tokens(tok, split="train", max_tokens=4_000_000), vocab, target.config.vocab_size,
                          always=tuple(tok.all_special_ids))  # the shallow drafts' subset (same text, same rule)
    feats_dir = extract_features(target, corpus_tokens(tok, split="train", max_tokens=train_tokens), work / "features")
    val_dir = extract_features(target, corpus_tokens(tok, split="validation", max_tokens=40_000)[:4096], work / "val-features",
                               chunk=8, progress=False)
    features, windows = load_features(feats_dir)
    val = load_features(val_dir)
    draft = EagleDraft(target, ids)
    settings = EagleSettings(steps=steps)
    log = train_eagle(target, draft, features, windows, work / "train", settings, val=val, minutes=minutes)
    del features, windows
    record = {**_stage(log), "vocab_subset": len(ids), "settings": asdict(settings),
              "data": "stdlib corpus, train split: the target's features (bf16) over it"}
    if on_policy and record["steps"] >= steps:  # then the target's own text (``onpolicy``), held out: the last 64 windows
        seqs = greedy_continuations(target, function_prompts(tok, on_policy, 64), 128, out_dir=work / "onpolicy")
        op_dir = extract_features(target, seqs.reshape(-1).numpy(), work / "onpolicy-features", seq_len=seqs.shape[1])
        f, w = load_features(op_dir)
        f, w = f[: len(seqs)], w[: len(seqs)]  # the feature chunks of more prompts may be present
        tune = EagleSettings(steps=on_policy_steps, batch=16, lr=3e-4, warmup=10, eval_every=50, unroll=unroll)
        log2 = train_eagle(target, draft, f[:-64], w[:-64], work / f"onpolicy-train-{len(seqs)}-{on_policy_steps}-u{unroll}", tune,
                           val=val, minutes=minutes)
        record["on_policy"] = {**_stage(log2), "prompts": len(seqs), "new_tokens": seqs.shape[1] - 64, "settings": asdict(tune),
                               "heldout_top1_on_policy": heldout_agreement(target, draft, f[-64:], w[-64:], steps=4),
                               "data": "the target's greedy continuations of 64-token openings of documented stdlib "
                                       "functions (train split)"}
        record["heldout_top1"] = record["on_policy"]["heldout_top1"]
        record["steps"] += record["on_policy"]["steps"]
        record["tokens"] += record["on_policy"]["tokens"]
        record["minutes"] = round(record["minutes"] + record["on_policy"]["minutes"], 1)
    return save_eagle(draft, out / "eagle.safetensors", name="eagle", target_name=name, record=record)


def _stage(log: pd.DataFrame) -> dict:
    train, ev = log[log.kind == "train"], log[log.kind == "eval"]
    return {"steps": int(train.step.max()) if len(train) else 0, "tokens": int(train.tokens.max()) if len(train) else 0,
            "minutes": round(float(log.seconds.max()) / 60, 1) if len(log) else 0.0,
            "heldout_top1": float(ev.top1.iloc[-1]) if len(ev) else None}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m specnb.distill", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["train", "export", "status", "eagle"])
    parser.add_argument("--family", default="smollm2", choices=sorted(FAMILIES))
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long (resume later)")
    parser.add_argument("--steps", type=int, default=DistillSettings.steps, help="the schedule's total steps")
    parser.add_argument("--vocab", type=int, default=16384, help="tokens kept in the drafts' head (FR-Spec)")
    parser.add_argument("--train-tokens", type=int, default=4_000_000)
    parser.add_argument("--on-policy", type=int, default=2752, help="eagle: prompts whose greedy continuations it trains on after the stdlib stage (0: none)")
    parser.add_argument("--on-policy-steps", type=int, default=500, help="eagle: steps on those continuations")
    parser.add_argument("--unroll", type=int, default=3, help="eagle: drafting steps per position in the on-policy loss "
                                                               "(EAGLE-3's training-time test; 1: teacher forcing)")
    parser.add_argument("--only", default=None, help="train/export only these drafts (comma-separated names), in a "
                                                     "checkpoint folder of their own; the same batches as a full run")
    parser.add_argument("--work", type=Path, default=None, help="checkpoint folder (default: data/cache/distill/FAMILY[/ONLY])")
    parser.add_argument("--out", type=Path, default=None, help="where drafts are written (default: data/drafts/FAMILY)")
    args = parser.parse_args(argv)
    only = [n for n in args.only.split(",") if n] if args.only else None
    work = args.work or (work_dir(args.family) / "-".join(only) if only else work_dir(args.family))
    if args.command == "eagle":
        path = eagle(args.family, vocab=args.vocab, train_tokens=args.train_tokens, steps=args.steps,
                     minutes=args.minutes, work=args.work or cache_dir() / "eagle" / args.family,
                     out=args.out or drafts_dir(args.family), on_policy=args.on_policy, on_policy_steps=args.on_policy_steps, unroll=args.unroll)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        return
    if args.command == "status":
        log = pd.read_csv(work / "log.csv")
        print(log[log.kind == "eval"].groupby("student").tail(1).to_string(index=False))
        return
    settings = DistillSettings(steps=args.steps)
    if args.command == "export" and (work / "checkpoint.pt").exists():  # the schedule it was trained with
        settings = DistillSettings(**torch.load(work / "checkpoint.pt", map_location="cpu", weights_only=False)["settings"])
    name, target, tokens, ids, val, specs, students = _setup(args.family, args.vocab, args.train_tokens, only)
    print(json.dumps({"target": name, "train_tokens": len(tokens), "vocab_subset": len(ids),
                      "drafts": {s.name: s.layers for s in specs}}))
    log = distill(target, students, tokens, work, settings, val_windows=val,
                  minutes=args.minutes if args.command == "train" else 0.0)
    for path in export(args.out or drafts_dir(args.family), name, specs, students, log, settings, len(ids)):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
