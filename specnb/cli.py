"""Command line for headless runs: ``python -m specnb generate|bench ...`` (see ``--help``)."""

from __future__ import annotations

import argparse
import sys

import torch

from .generate import PromptLookupDraft, assisted_generate, autoregressive_generate, packed, speculative_generate
from .generate.drafts import builds_source, is_draft_source
from .models import load_spec, load_tokenizer, parse_options
from .plotting import trace_text
from .results import append_rows, result_path
from .timing import compare, environment, summarize


def _tokenizer(args):
    """The target's tokenizer (``zoo/NAME``, a directory, a hub or packaged ID), or None for tiny specs."""
    if args.target.startswith(("tiny:", "copy")):
        return None
    try:
        return load_tokenizer(args.target)
    except (OSError, ValueError):
        return None


def _prompt_ids(args, vocab_size: int, tok) -> torch.Tensor:
    if args.prompt is not None:
        if tok is None:
            raise SystemExit(f"--prompt needs the target's tokenizer and {args.target!r} has none; use --prompt-ids 1,2,3 instead")
        return tok(args.prompt, return_tensors="pt").input_ids
    if args.prompt_ids:
        return torch.tensor([[int(t) for t in args.prompt_ids.split(",")]])
    gen = torch.Generator().manual_seed(args.seed)
    return torch.randint(0, vocab_size, (1, args.prompt_length), generator=gen)


def _lookup(spec: str) -> PromptLookupDraft:
    """``prompt-lookup[:max=N][:min=M][:pick=first|last]``: a ``PromptLookupDraft`` (Hugging Face's
    rule by default: max=2, min=1, pick=first)."""
    try:
        opts = parse_options(spec.split(":")[1:])
        unknown = sorted(set(opts) - {"max", "min", "pick"})
        if unknown:
            raise ValueError(f"prompt-lookup takes max=, min= and pick= (e.g. prompt-lookup:max=8:min=2:pick=last); got {unknown}")
        return PromptLookupDraft(opts.get("max", 2), opts.get("min", 1), opts.get("pick", "first"))
    except ValueError as e:
        raise SystemExit(str(e)) from None


def _load(args):
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    target = load_spec(args.target, device=device)
    if args.draft.split(":")[0] == "prompt-lookup":
        draft = _lookup(args.draft)
    else:
        draft = load_spec(args.draft, target=target, device=device) if args.draft else None
    if args.packed:  # after the draft: a draft built on the target shares the stock target's embedding and head
        if device != "cpu":
            raise SystemExit(f"--packed prepacks linear weights for oneDNN on a CPU; drop it on {device}")
        target = packed(target)
        draft = packed(draft) if isinstance(draft, torch.nn.Module) else draft
    return target, draft, device


def _methods(names, target, draft, ids, args):
    gen = lambda: torch.Generator(device=target.device).manual_seed(args.seed)  # noqa: E731
    kw = dict(do_sample=args.sample, temperature=args.temperature)
    table = {
        "autoregressive": lambda: autoregressive_generate(target, ids, args.max_new_tokens, generator=gen(), **kw),
        "speculative": lambda: speculative_generate(target, draft, ids, args.max_new_tokens, k=args.k, generator=gen(), **kw),
        "speculative-sequential": lambda: speculative_generate(
            target, draft, ids, args.max_new_tokens, k=args.k, verify="sequential", generator=gen(), **kw
        ),
        "assisted": lambda: assisted_generate(target, draft, ids, args.max_new_tokens, k=args.k, generator=gen(), **kw),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {sorted(table)}")
    if draft is None and any(n != "autoregressive" for n in names):
        raise SystemExit("speculative and assisted methods need --draft")
    if (is_draft_source(draft) or builds_source(draft)) and "assisted" in names:
        raise SystemExit("assisted generation needs a draft model (a causal LM); --draft prompt-lookup and EAGLE drafts work with the "
                         "speculative methods")
    return {n: table[n] for n in names}


def cmd_generate(args) -> None:
    target, draft, _ = _load(args)
    tok = _tokenizer(args)
    ids = _prompt_ids(args, target.config.vocab_size, tok)
    method = args.method or ("speculative" if draft is not None else "autoregressive")
    result = _methods([method], target, draft, ids, args)[method]()
    if tok is not None and len(result.sources) == result.num_new_tokens:
        print(trace_text([tok.decode([t]) for t in result.new_tokens.tolist()], result.sources))
    else:
        print("new token ids:", result.new_tokens.tolist())
    for key, value in result.summary().items():
        print(f"{key:>30}: {value}")


def cmd_bench(args) -> None:
    torch.manual_seed(args.seed)
    target, draft, device = _load(args)
    ids = _prompt_ids(args, target.config.vocab_size, _tokenizer(args))
    methods = _methods(args.methods.split(","), target, draft, ids, args)
    runs = compare(methods, repeats=args.repeats, warmup=args.warmup, device=device)
    table = summarize(runs, baseline=args.methods.split(",")[0])
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(table.to_string(index=False))
    stamp = environment(device)
    runs = runs.assign(target=args.target, draft=args.draft, max_new_tokens=args.max_new_tokens, **stamp)
    path = result_path(args.output)
    append_rows(path, runs)
    print(f"\n{len(runs)} rows appended to {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m specnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("generate", cmd_generate, "decode one prompt and print statistics"),
                            ("bench", cmd_bench, "interleaved timing of decoding methods")):
        p = sub.add_parser(name, help=help_)
        p.set_defaults(fn=fn)
        p.add_argument("--target", default="tiny:llama:layers=8:hidden=256", help="tiny:FAMILY[:k=v], a directory or a hub ID")
        p.add_argument("--draft", default="copy:noise=0.05",
                       help="tiny:..., copy[:noise=x], zoo/NAME, a directory, a hub ID, or prompt-lookup[:max=2:min=1:pick=first] "
                            "(no model; e.g. prompt-lookup:max=8:min=2:pick=last)")
        p.add_argument("--k", type=int, default=4, help="draft tokens per iteration")
        p.add_argument("--max-new-tokens", type=int, default=64)
        p.add_argument("--prompt", help="text, tokenized with the target's tokenizer")
        p.add_argument("--prompt-ids", help="comma-separated token ids")
        p.add_argument("--prompt-length", type=int, default=16, help="random prompt length when no prompt is given")
        p.add_argument("--sample", action="store_true", help="sample instead of greedy")
        p.add_argument("--temperature", type=float, default=1.0)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
        p.add_argument("--packed", action="store_true",
                       help="CPU: run target and draft with oneDNN-prepacked linear weights (specnb.generate.packed); same tokens")
    sub.choices["generate"].add_argument("--method", choices=["autoregressive", "speculative", "speculative-sequential", "assisted"])
    bench = sub.choices["bench"]
    bench.add_argument("--methods", default="autoregressive,speculative,assisted", help="comma-separated; the first is the baseline")
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--warmup", type=int, default=1)
    bench.add_argument("--output", default="bench", help="results CSV stem (data/results/STEM.csv)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
