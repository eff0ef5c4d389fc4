"""Command line of the zoo: ``python -m specnb.zoo COMMAND`` (``main``).

    ``build [--only NAME|GROUP] [--minutes M] [--steps N] [--budget-minutes M] [--corpus DIR] [--zoo DIR]``
        train what is unfinished, target first, then the draft groups (resumable; one build per zoo)
    ``corpus [--corpus DIR]``  corpus, tokenizer and manifest only
    ``table``  configs, parameters, bf16 sizes and the budget check
    ``speed [--only NAME]``  training tokens/s of one config
    ``card``  measure every exported model and write ``ZOO/README.md`` and the card table
        (``data/results/zoo_card.csv`` for the committed zoo, ``ZOO/zoo_card.csv`` for another)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pandas as pd

from ..paths import ZOO
from ..results import result_path, write_atomic
from .card import card_rows, write_model_card
from .checkpoint import is_finished
from ..corpus import make_layout, prepare_corpus
from .specs import MAX_FILE_BYTES, MAX_TOTAL_BYTES, TrainSettings, budget_table, check_budget, extend_budget, format_table, zoo_specs
from .train import acquire_build_lock, build, measure_speed

DESCRIPTION = "The workbook's own model family, trained offline on CPU from the Python standard library."


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command each for ``build``, ``corpus``, ``table``, ``speed`` and ``card``."""
    top = argparse.ArgumentParser(prog="python -m specnb.zoo", description=DESCRIPTION)
    sub = top.add_subparsers(dest="command", required=True)
    for name in ("build", "corpus", "table", "speed", "card"):
        p = sub.add_parser(name)
        p.add_argument("--corpus", help="train on this folder of text files instead of the stdlib")
        p.add_argument("--zoo", help="output root instead of data/zoo (caches go to ZOO/.corpus)")
        if name in ("build", "speed"):
            p.add_argument("--only", help="one model name or group (target, width, depth, data)")
            p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
            p.add_argument("--autocast", action="store_true", help="bf16 autocast (slow without native bf16)")
            p.add_argument("--micro-batch", type=int, default=TrainSettings.micro_batch)
        if name == "build":
            p.add_argument("--minutes", type=float, help="bound this invocation's training time")
            p.add_argument("--steps", type=int, help="bound this invocation's steps per group")
            p.add_argument("--budget-minutes", type=float,
                           help="with --only NAME: train NAME on to this many busy minutes (move its export aside first)")
    return top


def main(argv: list[str] | None = None) -> int:
    """Command line: ``build``, ``corpus``, ``table``, ``speed`` and ``card``."""
    args = build_parser().parse_args(argv)
    layout = make_layout(args.corpus, args.zoo)
    specs = zoo_specs()
    settings = TrainSettings()
    if args.command in ("build", "speed"):
        settings = replace(settings, compile=not args.no_compile, autocast=args.autocast, micro_batch=args.micro_batch)
    if args.command == "table":
        rows = budget_table(specs)
        print(format_table(rows))
        print(f"cap: {MAX_TOTAL_BYTES / 1e6:.0f} MB total, {MAX_FILE_BYTES / 1e6:.0f} MB per file; used {check_budget(rows) / 1e6:.1f} MB")
    elif args.command == "card":
        prepare_corpus(layout)
        rows = card_rows(layout)
        print(f"[zoo] model card: {write_model_card(layout, rows)}")
        # the committed zoo's table lives with the other results; another zoo's stays inside it
        table = result_path("zoo_card") if layout.zoo == ZOO else layout.zoo / "zoo_card.csv"
        write_atomic(pd.DataFrame(rows), table)  # the zoo as exported now, each row stamped; no model it no longer holds
        print(f"[zoo] card table: {table}")
    elif args.command == "corpus":
        manifest = prepare_corpus(layout)
        print(json.dumps({k: manifest[k] for k in ("python_version", "splits", "total", "sha256")}, indent=2))
    elif args.command == "speed":
        prepare_corpus(layout)
        measure_speed(next(s for s in specs if s.name == (args.only or "target")), layout, settings)
    else:
        if args.budget_minutes is not None:
            specs = extend_budget(specs, args.only or "", args.budget_minutes)
            if is_finished(layout, args.only):
                raise SystemExit(f"{args.only} is exported at {layout.zoo / args.only}, so it counts as finished: move that "
                                 f"folder aside to train it on to {args.budget_minutes:g} min (its checkpoint resumes)")
        lock = acquire_build_lock(layout)
        done = build(layout, specs, settings, args.only, args.minutes, args.steps)
        lock.close()
        left = [s.name for s in specs if not is_finished(layout, s.name)]
        print(f"[zoo] exported this run: {done or 'none'}; unfinished: {left or 'none'}", flush=True)
    return 0
