"""Honest timing, as seed 002 asks: warm-up, device sync, >= 5 repeats, median and spread, TTFT
separate from decode tokens/s, methods interleaved in one run so drift cancels, and an environment
stamp saved with every result.

- ``benchmark_op``: microbenchmarks with ``torch.utils.benchmark`` (it syncs CUDA itself).
- ``compare``: end-to-end decoding runs of several methods, interleaved A B C, B C A, C A B, ...
- ``summarize``: median, quartiles and the per-repeat ratio to a baseline method.
- ``over_prompts``: methods that decode several prompts per timed call, pooled (``PooledResult``).
- ``step_latency``: one decode step (or a (k+1)-token verification) after a fixed KV cache;
  ``step_latencies``: several of them interleaved in rotated rounds.
- ``forward_share``: how much of a decoding call is spent outside the models' forwards.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.utils.benchmark as tbench
from tqdm import tqdm

from .generate import judged_tokens, synchronize
from .generate.forward import crop, forward, new_cache
from .hooks import ForwardTimer

__all__ = ["rotated", "environment", "benchmark_op", "compare", "summarize", "synchronize", "step_latency", "forward_share",
           "PooledResult", "over_prompts", "step_latencies"]


def rotated(items: list, r: int) -> list:
    """``items`` started at position r (mod len): round r of a rotated interleaving (A B C, B C A, ...),
    so every item runs first, middle and last equally often and drift hits all alike."""
    r %= len(items)
    return items[r:] + items[:r]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(__file__))
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: str | torch.device | None = None) -> dict:
    """Where a measurement was taken: device, CPU/GPU name, threads, library versions, time."""
    import transformers

    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "env_device": device.type,
        "env_cpu": _cpu_name(),
        "env_cpu_isa": torch.backends.cpu.get_cpu_capability(),  # kernels ATen dispatches to: AVX2, AVX512, ...
        "env_gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "env_cpu_count": os.cpu_count(),
        "env_torch_threads": torch.get_num_threads(),
        "env_torch": torch.__version__,
        "env_transformers": transformers.__version__,
        "env_python": platform.python_version(),
        "env_commit": _git_commit(),
        "env_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def benchmark_op(fn: Callable[[], object], *, label: str = "", min_run_time: float = 0.2, warmup: int = 1) -> dict:
    """Time a small callable with ``torch.utils.benchmark.Timer.blocked_autorange`` (warm-up and
    CUDA sync included). Returns median, IQR and the number of measurements in seconds."""
    timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, label=label, num_threads=torch.get_num_threads())
    timer.timeit(warmup)  # warm-up
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return {"label": label, "median_s": m.median, "iqr_s": m.iqr, "mean_s": m.mean, "runs": len(m.times)}


def _row(method: str, repeat: int, result, wall_seconds: float) -> dict:
    row = dict(result.summary()) if hasattr(result, "summary") else {}
    row.setdefault("seconds", wall_seconds)  # results without their own clock get the wall time
    row.update(method=method, repeat=repeat, wall_seconds=wall_seconds)
    return row


class PooledResult:
    """Several ``GenerationResult``s (one per prompt) summarised as one run, so ``compare`` can time
    a method that decodes a list of prompts per call. Decode tokens/s pools decode tokens over
    decode seconds (TTFT excluded); alpha pools accepted over judged draft tokens."""

    def __init__(self, results: list, method: str, k=None):
        if not results:
            raise ValueError("PooledResult needs at least one GenerationResult")
        self.results, self.method, self.k = list(results), method, k

    def summary(self) -> dict:
        rs = self.results
        decode_tokens = sum(r.decode_tokens for r in rs)
        decode_s = sum(r.seconds - r.ttft_seconds for r in rs)
        accepted = [a for r in rs for a in r.accepted]
        proposed = [p for r in rs for p in r.proposed]
        judged = judged_tokens(accepted, proposed)
        calls = sum(r.target_calls for r in rs)
        return {
            "method": self.method, "k": self.k, "new_tokens": sum(r.num_new_tokens for r in rs),
            "seconds": sum(r.seconds for r in rs), "ttft_seconds": sum(r.ttft_seconds for r in rs),
            "tokens_per_second": decode_tokens / decode_s if decode_s > 0 else float("nan"),
            "target_calls": calls, "draft_calls": sum(r.draft_calls for r in rs),
            "mean_accepted_tokens": sum(r.num_new_tokens for r in rs) / calls if calls else float("nan"),
            "acceptance_rate": sum(accepted) / judged if judged else float("nan"),
            "tokens_per_iteration": (sum(accepted) + len(accepted)) / len(accepted) if accepted else float("nan"),
        }


def over_prompts(methods: Mapping[str, Callable[[torch.Tensor], object]], prompts, k=None) -> dict[str, Callable[[], PooledResult]]:
    """Turn per-prompt decoders ``{name: fn(input_ids) -> GenerationResult}`` into ``compare``
    methods that decode every prompt in ``prompts`` per call and return one ``PooledResult``, so a
    speedup is measured over several prompts (alpha is strongly prompt-dependent) in one
    interleaved run. ``k`` is recorded on the pooled rows."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("over_prompts needs at least one prompt; pass a non-empty list of input_ids tensors")
    if not methods:
        raise ValueError("methods is empty; pass a dict name -> fn(input_ids)")
    return {name: (lambda fn=fn, name=name: PooledResult([fn(p) for p in prompts], name, k)) for name, fn in methods.items()}


def compare(
    methods: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Run every method ``repeats`` times, interleaved and rotated each round (A B C, B C A, ...),
    after ``warmup`` untimed rounds. Every call is wall-timed between device syncs
    (``wall_seconds``); a result with a ``summary()`` (e.g. ``GenerationResult``, whose own clock
    also separates TTFT) contributes its statistics to the row. One tidy row per (method, repeat)."""
    if repeats < 5:
        raise ValueError(f"repeats must be >= 5 for a median and spread worth reporting; got {repeats}")
    if not methods:
        raise ValueError("methods is empty; pass a dict name -> callable")
    names = list(methods)
    for _ in range(warmup):
        for name in names:
            methods[name]()
    rows = []
    bar = tqdm(total=repeats * len(names), desc="interleaved timing", disable=not progress, leave=False)
    for r in range(repeats):
        order = rotated(names, r)
        for name in order:
            synchronize(device)
            start = time.perf_counter()
            result = methods[name]()
            synchronize(device)
            rows.append(_row(name, r, result, time.perf_counter() - start))
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame, baseline: str | None = None, metric: str = "tokens_per_second",
              higher_is_better: bool = True) -> pd.DataFrame:
    """Per method: median and quartiles of ``metric`` and of TTFT, and, given a ``baseline``, the
    median over repeats of the per-repeat ratio metric/metric_baseline (pairing cancels drift),
    inverted when lower is better (e.g. seconds), so a ratio above 1 always means faster."""
    out = []
    for method, g in runs.groupby("method", sort=False):
        row = {
            "method": method,
            "repeats": len(g),
            f"{metric}_median": g[metric].median(),
            f"{metric}_q25": g[metric].quantile(0.25),
            f"{metric}_q75": g[metric].quantile(0.75),
        }
        for col in ("ttft_seconds", "seconds", "mean_accepted_tokens", "acceptance_rate", "target_calls", "draft_calls"):
            if col in g and col != metric:
                row[f"{col}_median"] = g[col].median()
        out.append(row)
    table = pd.DataFrame(out)
    if baseline is not None:
        if baseline not in set(runs["method"]):
            raise ValueError(f"baseline {baseline!r} is not among the methods {sorted(set(runs['method']))}")
        base = runs[runs["method"] == baseline].set_index("repeat")[metric]
        ratios = {}
        for method, g in runs.groupby("method", sort=False):
            r = g.set_index("repeat")[metric] / base
            r = r if higher_is_better else 1 / r
            ratios[method] = (float(np.nanmedian(r)), float(np.nanquantile(r, 0.25)), float(np.nanquantile(r, 0.75)))
        table[f"ratio_vs_{baseline}"] = table["method"].map(lambda m: ratios[m][0])
        table["ratio_q25"] = table["method"].map(lambda m: ratios[m][1])
        table["ratio_q75"] = table["method"].map(lambda m: ratios[m][2])
    return table


def step_latency(model, *, context: int, tokens: int = 1, min_run_time: float = 0.3, seed: int = 0) -> dict:
    """Median latency of one forward of ``tokens`` new tokens after a KV cache of ``context``
    tokens: a decode step (tokens=1) or the verification of k draft tokens (tokens=k+1).

    The cache is filled once; each timed call runs the forward and crops the cache back, so every
    repeat sees the same context. Timed with ``torch.utils.benchmark`` (warm-up, CUDA sync)."""
    if context < 1 or tokens < 1:
        raise ValueError(f"context and tokens must be >= 1; got context={context}, tokens={tokens}")
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    prefix = torch.randint(0, vocab, (1, context), generator=gen).to(model.device)
    step = torch.randint(0, vocab, (1, tokens), generator=gen).to(model.device)
    cache = new_cache(model)
    with torch.inference_mode():
        forward(model, prefix, cache, last_only=True)

        def run():
            forward(model, step, cache)
            crop(cache, context)

        out = benchmark_op(run, label=f"{tokens} token(s) after {context}", min_run_time=min_run_time)
    return {**out, "context": context, "tokens": tokens}


def step_latencies(models: Mapping[str, object], *, context: int, tokens: int = 1, rounds: int = 5,
                   min_run_time: float = 0.3, progress: bool = True, per_round: bool = False) -> pd.DataFrame:
    """``step_latency`` of several models interleaved: ``rounds`` rounds visiting every entry in
    rotated order (A B C, B C A, ...), so drift in the machine's speed hits all alike (one model
    after another is not enough on a shared CPU: a slow minute makes one model look slow).

    ``models`` maps a label to a model (timed at ``tokens`` new tokens) or to ``(model, tokens)``,
    so one run can time a target's 1-token step and its (k+1)-token verifications side by side.
    Returns one row per label, in the given order: median over rounds of the per-round median, and
    the spread (min, max) over rounds, in seconds; with ``per_round``, the raw (label, round) rows,
    for ratios taken within a round."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    if not models:
        raise ValueError("models is empty; pass a dict label -> model or (model, tokens)")
    entries = {name: (m if isinstance(m, tuple) else (m, tokens)) for name, m in models.items()}
    names = list(entries)
    rows = []
    bar = tqdm(total=rounds * len(names), desc="step latency (interleaved)", disable=not progress, leave=False)
    for r in range(rounds):
        for name in rotated(names, r):
            model, n = entries[name]
            out = step_latency(model, context=context, tokens=n, min_run_time=min_run_time, seed=r)
            rows.append({"model": name, "round": r, "tokens": n, "median_s": out["median_s"]})
            bar.update()
    bar.close()
    raw = pd.DataFrame(rows)
    if per_round:
        return raw.assign(context=context)
    per = raw.groupby("model", sort=False)["median_s"]
    table = pd.DataFrame({"median_s": per.median(), "min_s": per.min(), "max_s": per.max(),
                          "tokens": raw.groupby("model", sort=False)["tokens"].first()}).loc[names]
    return table.assign(context=context, rounds=rounds).reset_index()


def forward_share(fn: Callable[[], object], models: Mapping[str, torch.nn.Module], device=None) -> dict:
    """Run ``fn`` once and split its wall time into time inside the top-level forward of each of
    ``models`` and time outside them (the decoding loop's own overhead: sampling, bookkeeping,
    cache cropping, Python). Syncs the device around every forward, so use it to attribute time,
    not to time the loop."""
    with ForwardTimer(models, device) as timer:
        fn()
    total, inside = timer.total, {name: timer.seconds(name) for name in models}
    outside = total - sum(inside.values())
    return {"total_s": total, **{f"{n}_forward_s": s for n, s in inside.items()}, "outside_s": outside,
            "outside_share": outside / total if total > 0 else float("nan")}
