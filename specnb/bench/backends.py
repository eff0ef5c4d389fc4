"""The eager, static and compiled backends measured side by side (gpt-fast's cure for per-forward
overhead, ``specnb.generate.static``).

- ``backend_step_latency(model, context, tokens, backend)``: median latency of one forward on a backend
- ``benchmark_backends(target, drafts, prompts)``: step latencies, verify cost, compile seconds
  and interleaved decode tokens/s of every (backend, draft, k), with greedy identity checked
- ``generate_runs(frame)``: its timed generations as (run, prompt, method) rows, for a speedup
  paired by prompt with a prompt-level CI (``stats.paired_speedup``)
- ``python -m specnb.bench.backends bench --target ... --draft ...``: the same from the shell,
  rows appended to data/results/fastpath.csv
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from ..generate import autoregressive_generate, speculative_generate
from ..generate.static import check_static_support, ensure_compiled, prefill, run_step, static_state, step_shapes
from ..generate.steps import BACKENDS
from ..measure import heldout_prompts
from ..models import load_spec, load_tokenizer
from ..results import append_rows, result_path
from ..timing import benchmark_op, compare, environment
from ..timing import step_latency as eager_step_latency

__all__ = ["backend_step_latency", "benchmark_backends", "generate_runs", "main"]


def backend_step_latency(model, *, context: int, tokens: int = 1, backend: str = "static", role: str = "target",
                 min_run_time: float = 0.3, seed: int = 0) -> dict:
    """Median latency of one forward of ``tokens`` tokens after ``context`` cached tokens, on the
    static cache (``backend="static"``) or its compiled step (``"compiled"``; compile time
    excluded and returned as ``compile_seconds``). Every timed call writes the same slots, so each
    repeat sees the same context: the static cache's rollback is free. ``"eager"`` delegates to
    ``specnb.timing.step_latency`` (DynamicCache + crop)."""
    if backend == "eager":
        return {**eager_step_latency(model, context=context, tokens=tokens, min_run_time=min_run_time, seed=seed),
                "backend": backend, "compile_seconds": 0.0}
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    check_static_support(model)
    compiled = backend == "compiled"
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    last_only = tokens == 1
    with torch.inference_mode():  # inputs made here are inference tensors, like generation's (no recompile)
        prefix = torch.randint(0, vocab, (1, context), generator=gen).to(model.device)
        step = torch.randint(0, vocab, (1, tokens), generator=gen).to(model.device)
        state = static_state(model, context + tokens + 1, role)
        compile_s = ensure_compiled(model, state, tokens, last_only) if compiled else 0.0
        prefill(model, state, prefix)
        out = benchmark_op(lambda: run_step(model, state, step, context, last_only=last_only, compiled=compiled),
                           label=f"{backend}: {tokens} token(s) after {context}", min_run_time=min_run_time)
    return {**out, "context": context, "tokens": tokens, "backend": backend, "compile_seconds": compile_s}


def _generate(backend: str, target, draft, ids, max_new_tokens: int, k: int | None):
    if draft is None:
        return autoregressive_generate(target, ids, max_new_tokens, backend=backend)
    return speculative_generate(target, draft, ids, max_new_tokens, k=k, backend=backend)


@torch.inference_mode()
def _compile_rows(models: Mapping[str, torch.nn.Module], ks: Sequence[int], length: int) -> list[dict]:
    """Compile every step a compiled run of these models uses; one row per (model, shape)."""
    rows = []
    for name, model in models.items():
        check_static_support(model, name)
        role = "target" if name == "target" else "draft"
        state = static_state(model, length, role)
        shapes = step_shapes(role, None) + ([(k + 1, False) for k in ks] if role == "target" else [])
        for tokens, last_only in shapes:
            rows.append(dict(measure="compile", backend="compiled", model=name, tokens=tokens,
                             compile_seconds=ensure_compiled(model, state, tokens, last_only)))
    return rows


def _latency_rows(models, backends, ks, context: int, min_run_time: float) -> list[dict]:
    """A 1-token step of every model and the target's (k+1)-token verifications, per backend."""
    rows = []
    for backend in backends:
        base = None
        for name, model in models.items():
            for tokens in [1] + ([k + 1 for k in ks] if name == "target" else []):
                out = backend_step_latency(model, context=context, tokens=tokens, backend=backend, min_run_time=min_run_time,
                                           role="target" if name == "target" else "draft")
                base = out["median_s"] if name == "target" and tokens == 1 else base
                rows.append(dict(measure="step_latency", backend=backend, model=name, tokens=tokens, context=context,
                                 median_s=out["median_s"], iqr_s=out["iqr_s"], runs=out["runs"],
                                 ratio_to_target_step=out["median_s"] / base))
    return rows


def _generate_rows(target, drafts, prompts, backends, ks, max_new_tokens: int, repeats: int, progress: bool) -> list[dict]:
    """Per prompt, every (backend, method, draft, k) timed interleaved, with greedy identity to eager."""
    configs = {}
    for backend in backends:
        configs[f"{backend}/autoregressive"] = (backend, "autoregressive", None, None)
        for name in drafts:
            for k in ks:
                configs[f"{backend}/speculative/{name}/k={k}"] = (backend, "speculative", name, k)
    rows = []
    for p, ids in enumerate(prompts):
        reference = _generate("eager", target, None, ids, max_new_tokens, None).sequences
        identical = {m: torch.equal(_generate(b, target, drafts.get(d) if d else None, ids, max_new_tokens, k).sequences.cpu(),
                                    reference.cpu())
                     for m, (b, _, d, k) in configs.items()}
        methods = {m: functools.partial(_generate, b, target, drafts[d] if d else None, ids, max_new_tokens, k)
                   for m, (b, _, d, k) in configs.items()}
        runs = compare(methods, repeats=repeats, progress=progress, device=target.device)
        for row in runs.to_dict("records"):
            b, kind, d, k = configs[row["method"]]
            rows.append(dict(row, measure="generate", backend=b, method=kind, model=d or "target", draft=d, k=k,
                             prompt=p, prompt_length=int(ids.shape[1]), max_new_tokens=max_new_tokens,
                             identical_to_eager=identical[row["method"]], config=row["method"]))
    return rows


def generate_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The "generate" rows of ``benchmark_backends`` as one row per (repeat, prompt, config): columns
    run, prompt, method (the config, e.g. "compiled/speculative/d1/k=3"), decode_seconds and
    decode_tokens (TTFT excluded), the shape ``stats.paired_speedup`` reads."""
    g = frame[frame["measure"] == "generate"]
    if g.empty:
        raise ValueError("no generate rows: pass the frame benchmark_backends returned")
    decode = g["seconds"] - g["ttft_seconds"]
    return pd.DataFrame({"run": g["repeat"].astype(int), "prompt": g["prompt"].astype(int), "method": g["config"],
                         "decode_seconds": decode, "decode_tokens": g["tokens_per_second"] * decode})


def benchmark_backends(
    target,
    drafts: Mapping[str, torch.nn.Module],
    prompts: Sequence[torch.Tensor],
    *,
    ks: Sequence[int] = (1, 2, 4),
    backends: Sequence[str] = BACKENDS,
    repeats: int = 5,
    max_new_tokens: int = 32,
    min_run_time: float = 0.3,
    progress: bool = False,
) -> pd.DataFrame:
    """Compare the eager, static and compiled backends on one target and its drafts (greedy).

    Returns one tidy frame, column ``measure``:
    - "compile": seconds to compile and warm each compiled step (model, tokens);
    - "step_latency": median latency of a 1-token step of the target and of every draft, and of
      the target's (k+1)-token verification, at the longest prompt's context
      (``ratio_to_target_step``: c for drafts, the verify cost for the target);
    - "generate": per prompt, every (backend, method, draft, k) timed with
      ``specnb.timing.compare`` (all backends and configurations interleaved, ``repeats`` rounds
      after a warm-up round), with ``identical_to_eager``: the greedy tokens equal the target's
      eager autoregressive ones.
    Every row carries ``specnb.timing.environment()``. Compilation happens before any timing.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; choose from {BACKENDS}")
    if not prompts:
        raise ValueError("prompts is empty; pass a list of (1, prompt_len) token tensors")
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be integers >= 1 (draft tokens per iteration); got {list(ks)!r}")
    models = {"target": target, **dict(drafts)}
    context = max(int(p.shape[1]) for p in prompts)
    rows = []
    if "compiled" in backends:  # compile everything first, so no timing below includes it
        rows += _compile_rows(models, ks, length=context + max_new_tokens + max(ks) + 1)
    rows += _latency_rows(models, backends, ks, context, min_run_time)
    rows += _generate_rows(target, drafts, prompts, backends, ks, max_new_tokens, repeats, progress)
    return pd.DataFrame(rows).assign(**environment(target.device))


# --------------------------------------------------------------------------------------------
# Command line: python -m specnb.bench.backends bench ...
# --------------------------------------------------------------------------------------------


def _summaries(table) -> list:
    """(title, frame) pairs for printing a ``benchmark_backends`` table."""
    out = []
    lat = table[table.measure == "step_latency"]
    if len(lat):
        out.append(("step latency, median ms", lat.pivot_table(index=["model", "tokens"], columns="backend", values="median_s") * 1e3))
    gen = table[table.measure == "generate"]
    if len(gen):
        out.append(("decode tokens/s (median over repeats and prompts)",
                    gen.groupby(["backend", "method", "model", "k"], dropna=False).agg(
                        tokens_per_second=("tokens_per_second", "median"), ttft_seconds=("ttft_seconds", "median"),
                        acceptance_rate=("acceptance_rate", "median"), identical=("identical_to_eager", "all"))))
    comp = table[table.measure == "compile"]
    if len(comp):
        out.append(("compile seconds (steps compiled in this run)", comp.groupby("model")["compile_seconds"].sum()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specnb.bench.backends", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="eager vs static vs compiled: step latency, verify cost, tokens/s, compile seconds")
    bench.add_argument("--target", default="tiny:llama:layers=8:hidden=256:vocab_size=512")
    bench.add_argument("--draft", action="append", help="draft spec (repeatable); default copy:noise=0.05:layers=2")
    bench.add_argument("--k", default="1,2,4", help="comma-separated draft lengths")
    bench.add_argument("--backends", default=",".join(BACKENDS))
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--max-new-tokens", type=int, default=32)
    bench.add_argument("--prompt-length", type=int, default=16)
    bench.add_argument("--prompts", type=int, default=1, help="number of prompts")
    bench.add_argument("--heldout", action="store_true",
                       help="prompts cut from the zoo corpus's held-out split with the target's tokenizer "
                            "(default: random token ids, which a trained draft rarely predicts)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    bench.add_argument("--output", default="fastpath", help="results CSV stem (data/results/STEM.csv)")
    args = parser.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = load_spec(args.target, device=device)
        specs = args.draft or ["copy:noise=0.05:layers=2"]
        drafts = {spec: load_spec(spec, target=target, device=device) for spec in specs}
        if args.heldout:
            prompts = heldout_prompts(load_tokenizer(args.target), n=args.prompts, length=args.prompt_length, seed=args.seed)
            prompts = [p.to(device) for p in prompts]
        else:
            gen = torch.Generator().manual_seed(args.seed)
            prompts = [torch.randint(0, target.config.vocab_size, (1, args.prompt_length), generator=gen).to(device)
                       for _ in range(args.prompts)]
        table = benchmark_backends(target, drafts, prompts, ks=[int(k) for k in args.k.split(",")],
                                   backends=args.backends.split(","), repeats=args.repeats,
                                   max_new_tokens=args.max_new_tokens, progress=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 4):
        for title, frame in _summaries(table):
            print(f"\n{title}\n{frame}")
    path = result_path(args.output)
    append_rows(path, table.assign(target=args.target))
    print(f"\n{len(table)} rows appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
