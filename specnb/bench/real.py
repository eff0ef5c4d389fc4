"""The studies of notebook 07 on a real pretrained target (SmolLM2-135M-Instruct and the drafts
``specnb.distill`` trained for it), each returning tidy frames with prompt-level CIs.

- ``self_drafts(target)``: the untrained truncated self-drafts (first 1 and 2 layers, full head),
  the floor every trained draft must beat.
- ``drafts_card(drafts, folder)``: what each draft is: layers, query heads and FFN width per layer,
  own parameters and their dtype,
  bytes stored, head tokens, training steps, tokens and minutes, held-out top-1 agreement.
- ``k_sweep(target, draft, prompts, ks)``: SpS at every k against specnb autoregressive, one
  interleaved run; speedup and alpha per k with CIs; ``stats.k_star_set`` reads K* from it.
- ``draft_sweep(target, drafts, prompts, k)``: every draft at one k, interleaved; speedup, alpha,
  and the cost ratio c from interleaved step latencies.
- ``depth_latency(target, depths)``: decode-step latency of truncated copies by depth, with a
  least-squares line (seed 004's "latency grows linearly with depth").
- ``depth_vs_width(card, sweep, headline, runs, depth, width)``: seed 004's pair of drafts at equal
  parameters (few whole layers vs more, narrower ones), side by side, and SpS with one over SpS
  with the other, paired.
- ``alpha_to_pay(costs)``: from measured c and verify costs per k (``measure.pair_costs``), the
  alpha a draft needs to break even and to reach each speedup goal (Thm 3.8 inverted).
- ``zoo_findings()``: what the committed zoo notebooks measured for the same claims (their CSVs),
  for the verdict table's "zoo" column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats as _stats

from ..generate import autoregressive_generate, speculative_generate
from ..generate.theory import alpha_needed
from ..models import count_parameters, truncated_copy
from ..paths import DATA
from ..results import read_results
from ..stats import paired_speedup
from ..shallow import read_metadata, shallow_draft
from ..timing import step_latencies
from .peers import interleaved_runs, speedup_table

__all__ = ["self_drafts", "drafts_card", "k_sweep", "draft_sweep", "depth_latency", "depth_vs_width", "alpha_to_pay",
           "zoo_findings"]


def self_drafts(target, depths: Sequence[int] = (1, 2)) -> dict:
    """``self-NL``: the target's first N layers, its final norm, embedding and full head, untrained."""
    return {f"self-{n}L": shallow_draft(target, range(n)) for n in depths}


def drafts_card(drafts: Mapping[str, torch.nn.Module], folder: str | Path | None = None) -> pd.DataFrame:
    """One row per draft; trained ones (a file in ``folder``) carry their training record."""
    rows = []
    for name, d in drafts.items():
        mine = [p for n, p in d.named_parameters() if "embed_tokens." not in n and not n.startswith("lm_head.")]
        ids = getattr(d.lm_head, "ids", None)
        row = {"draft": name, "layers": d.config.num_hidden_layers, "heads": d.config.num_attention_heads,
               "ffn": d.config.intermediate_size, "own_params_M": sum(p.numel() for p in mine) / 1e6,
               "dtype": str(mine[0].dtype).removeprefix("torch.") if mine else "",
               "head_tokens": int(ids.numel()) if ids is not None else d.config.vocab_size}
        path = Path(folder) / f"{name}.safetensors" if folder is not None else None
        if path is not None and path.exists():
            meta = read_metadata(path)
            rec = meta["record"]
            row.update(init=f"{meta['spec'].init} {list(meta['spec'].layers)}", stored_MB=path.stat().st_size / 1e6,
                       steps=rec.get("steps"), train_tokens_M=(rec.get("tokens") or 0) / 1e6, train_minutes=rec.get("minutes"),
                       heldout_top1=rec.get("heldout_top1"), heldout_kl=rec.get("heldout_kl"))
        else:
            row.update(init="untrained: the target's first layers", stored_MB=0.0, steps=0, train_tokens_M=0.0, train_minutes=0.0)
        rows.append(row)
    return pd.DataFrame(rows)


def k_sweep(target, draft, prompts: Sequence[torch.Tensor], ks: Sequence[int] = range(1, 8), *, new_tokens: int,
            runs: int = 1, eos_token_id=None, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, table): SpS of ``draft`` at every k and specnb autoregressive, interleaved per prompt;
    the table has one row per k with speedup over autoregressive, its CI, and alpha with its CI."""
    methods = {"specnb autoregressive": lambda p: autoregressive_generate(target, p, new_tokens, eos_token_id=eos_token_id)}
    for k in ks:
        methods[f"k={k}"] = lambda p, k=k: speculative_generate(target, draft, p, new_tokens, k=k, eos_token_id=eos_token_id)
    frame = interleaved_runs(methods, prompts, runs=runs, label="k sweep", progress=progress)
    table = speedup_table(frame, "specnb autoregressive")
    table = table[table.method != "specnb autoregressive"].assign(k=lambda t: t.method.str[2:].astype(int))
    return frame, table.reset_index(drop=True)


def draft_sweep(target, drafts: Mapping[str, torch.nn.Module], prompts: Sequence[torch.Tensor], *, k: int, new_tokens: int,
                runs: int = 1, eos_token_id=None, context: int = 128, rounds: int = 3, min_run_time: float = 0.3,
                progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, table): SpS of every draft at ``k`` against specnb autoregressive, interleaved per
    prompt; the table adds each draft's c (decode-step latency over the target's, interleaved in
    ``rounds`` rounds of ``timing.step_latencies``)."""
    methods = {"specnb autoregressive": lambda p: autoregressive_generate(target, p, new_tokens, eos_token_id=eos_token_id)}
    for name, d in drafts.items():
        methods[name] = lambda p, d=d: speculative_generate(target, d, p, new_tokens, k=k, eos_token_id=eos_token_id)
    frame = interleaved_runs(methods, prompts, runs=runs, label="drafts", progress=progress)
    table = speedup_table(frame, "specnb autoregressive")
    table = table[table.method != "specnb autoregressive"].rename(columns={"method": "draft"})
    lat = step_latencies({"target": target, **drafts}, context=context, rounds=rounds, min_run_time=min_run_time,
                         progress=progress).set_index("model")
    table["c"] = table["draft"].map(lambda n: lat.loc[n, "median_s"] / lat.loc["target", "median_s"])
    return frame, table.reset_index(drop=True)


def depth_latency(target, depths: Sequence[int] = (1, 2, 4, 8, 16), *, context: int = 128, rounds: int = 3,
                  min_run_time: float = 0.3, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """(rows, fit): decode-step latency of the target truncated to each depth (and whole), and the
    least-squares line ms = slope * layers + intercept with its r²."""
    total = target.config.num_hidden_layers
    models = {f"{n} layers": truncated_copy(target, n) for n in depths if n < total}
    models[f"{total} layers"] = target
    lat = step_latencies(models, context=context, rounds=rounds, min_run_time=min_run_time, progress=progress)
    lat["layers"] = lat["model"].str.split().str[0].astype(int)
    lat["decode_ms"] = 1e3 * lat["median_s"]
    lat["params_M"] = [count_parameters(m) / 1e6 for m in models.values()]
    fit = _stats.linregress(lat["layers"], lat["decode_ms"])
    return lat, {"slope_ms_per_layer": fit.slope, "intercept_ms": fit.intercept, "r2": fit.rvalue ** 2}


def depth_vs_width(card: pd.DataFrame, sweep: pd.DataFrame, headline: pd.DataFrame, runs: pd.DataFrame, depth: str,
                   width: str) -> tuple[pd.DataFrame, dict]:
    """Seed 004's pair at equal parameters: ``depth`` keeps few whole layers, ``width`` more,
    narrower ones. (rows, ratio): one row per draft with its shape and training record
    (``drafts_card``), its cost ratio c (``draft_sweep``), and its SpS speedup over the headline's
    baseline and alpha with their CIs (``speedup_table`` of ``runs``); ``ratio`` is the paired
    speedup of SpS with ``depth`` over SpS with ``width`` in the same interleaved ``runs``."""
    names = {"depth": depth, "width": width}
    missing = [n for n in names.values() if f"specnb SpS {n}" not in set(headline["method"])]
    if missing:
        raise ValueError(f"the headline run has no 'specnb SpS' row for {missing}: add those drafts' SpS to its methods")
    rows = []
    for how, name in names.items():
        c = card.set_index("draft").loc[name]
        h = headline.set_index("method").loc[f"specnb SpS {name}"]
        rows.append({"how": how, "draft": name, "layers": c["layers"], "heads": c["heads"], "ffn": c["ffn"],
                     "own_params_M": c["own_params_M"], "steps": c.get("steps"), "heldout_kl": c.get("heldout_kl"),
                     "heldout_top1": c.get("heldout_top1"), "c": sweep.set_index("draft").loc[name, "c"],
                     **{k: h[k] for k in ("alpha", "alpha_low", "alpha_high", "speedup", "ci_low", "ci_high", "identical")}})
    return pd.DataFrame(rows), paired_speedup(runs, f"specnb SpS {depth}", f"specnb SpS {width}")


def alpha_to_pay(costs: pd.DataFrame, goals: Sequence[float] = (1.0, 1.5, 2.0)) -> pd.DataFrame:
    """Per k of ``costs`` (columns k, c, verify_cost): the alpha needed for each speedup goal
    (``theory.alpha_needed``; nan: unreachable at this k even with every token accepted)."""
    out = costs[["k", "c", "verify_cost"]].copy()
    for g in goals:
        out[f"alpha for {g:g}x"] = [alpha_needed(g, int(k), c, v) for k, c, v in zip(out.k, out.c, out.verify_cost)]
    return out


def _read(name: str) -> pd.DataFrame | None:
    """The latest run's rows of a committed result (rows are appended run after run)."""
    frame = read_results(DATA / "results" / f"{name}.csv")
    if frame.empty:
        return None
    return frame[frame.env_time == frame.env_time.max()] if "env_time" in frame else frame


def zoo_findings() -> dict[str, str]:
    """claim key -> what the committed zoo run measured (from data/results), or "not run"."""
    out = {}
    sps = _read("sps_vs_asg")
    if sps is not None:
        piv = sps.pivot_table(index="draft", columns="implementation", values="speedup")
        out["sps_vs_asg"] = ", ".join(f"{d}: {r:.2f}x" for d, r in (piv["SpS"] / piv["AsG"]).items())
        out["speedup"] = ", ".join(f"{d}: {r:.2f}x" for d, r in piv["SpS"].items())
    ks = _read("k_star")
    if ks is not None:
        out["k_star"] = ", ".join(f"{d}: {k}" for d, k in zip(ks["draft"], ks["K* measured"]))
    dl = _read("depth_latency")
    if dl is not None and "r2" in dl:
        out["depth_latency"] = f"{dl['slope_ms_per_layer'].iloc[0]:.2f} ms/layer, r² {dl['r2'].iloc[0]:.3f}"
    corr = _read("acceptance_correlations")
    if corr is not None:
        c = corr[(corr.predictor == "accuracy") & (corr.method == "spearman") & (corr.outcome == "alpha_greedy")]
        if len(c):
            out["accuracy"] = f"Spearman {c.r.iloc[0]:+.2f} [{c.ci_low.iloc[0]:+.2f}, {c.ci_high.iloc[0]:+.2f}], n={int(c.n.iloc[0])}"
    dv = _read("depth_verdicts")
    if dv is not None:
        healed = dv[dv.claim.str.contains("deep-narrow") & dv.claim.str.contains("healed") & ~dv.claim.str.contains("unhealed")]
        if len(healed):
            out["depth_vs_width"] = f"{healed['ours'].iloc[0]} {healed['95% CI'].iloc[0]}"
    size = _read("size_headline")
    if size is not None and "measured_speedup" in size:
        best = size.groupby("draft")["measured_speedup"].max()
        out["smallest"] = f"best {best.idxmax()} ({best.max():.2f}x)"
    return out
