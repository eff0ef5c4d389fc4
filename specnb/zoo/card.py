"""The model card ``ZOO/README.md``, generated from measurements of the exported models.

- ``exported_models``: the models exported to a zoo, target first.
- ``card_rows``: one measured row per model: size, training, held-out loss and accuracy, top-1
  agreement with the target, and 1-token decode latency (``specnb.timing.step_latencies``), each
  row stamped with the environment it was measured in (``specnb.timing.environment``).
- ``write_model_card``: the card's text and table from those rows, written atomically.
- ``read_card(names)``: the committed card table (``data/results/zoo_card.csv``), the latest row
  per model, in any profile (the quick one reads the committed zoo's card too).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM

import pandas as pd

from ..atomic import write_text
from ..paths import DATA
from ..results import read_results
from ..timing import environment, step_latencies
from ..corpus import Layout, load_split
from .export import evaluate_lm
from .specs import TrainSettings


def exported_models(layout: Layout) -> list[str]:
    """Names of the models exported to the zoo (directories with a training.json), target first."""
    names = sorted(p.parent.name for p in layout.zoo.glob("*/training.json"))
    return sorted(names, key=lambda n: (n != "target", n))


def card_rows(layout: Layout, settings: TrainSettings | None = None, split: str = "test", max_tokens: float = float("inf"),
              context: int = 128, min_run_time: float = 0.3, rounds: int = 5) -> list[dict]:
    """One measured row per exported model: size, training, held-out loss/accuracy on ``split``
    (the whole split by default: a few windows of 512 tokens swing accuracy by several points),
    top-1 agreement with the target at the same positions, and 1-token decode latency after
    ``context`` tokens here (``timing.step_latencies``: all models interleaved in ``rounds``
    rotated rounds; median, with the min and max over rounds)."""
    settings = replace(settings or TrainSettings(), autocast=False)
    tokens = load_split(layout, split)
    names = exported_models(layout)
    if not names:
        raise ValueError(f"no exported models in {layout.zoo}; build them with `python -m specnb.zoo build`")
    reference = None
    rows, models = [], {}
    for name in tqdm(names, desc=f"card ({split})"):  # target first: its predictions are the reference
        info = json.loads((layout.zoo / name / "training.json").read_text())
        model = models[name] = AutoModelForCausalLM.from_pretrained(str(layout.zoo / name), dtype=torch.float32).eval()
        metrics = evaluate_lm(model, tokens, settings, max_tokens, reference=reference)
        if name == "target":
            reference = metrics["predictions"]
            metrics["agreement"] = 1.0
        rows.append({
            "model": name, "params": info["params"], "layers": info["layers"], "hidden": info["hidden"],
            "heads": info["heads"], "init": info.get("init", "random"), "objective": info["objective"],
            "training_tokens": info.get("training_tokens"),
            "training_minutes": info.get("training_busy_minutes", info.get("training_minutes")),
            "budget_history": " -> ".join(info.get("budget_history", [info.get("budget", "")])),
            f"{split}_loss": metrics["loss"], f"{split}_accuracy": metrics["accuracy"],
            f"{split}_tokens": metrics["tokens"], "top1_agreement_with_target": metrics.get("agreement", float("nan")),
        })
    latency = step_latencies(models, context=context, rounds=rounds, min_run_time=min_run_time).set_index("model")
    env = environment("cpu")  # where the latencies were taken, carried by every row
    for row in rows:
        lat = latency.loc[row["model"]]
        row.update(decode_ms=1e3 * lat["median_s"], decode_ms_min=1e3 * lat["min_s"], decode_ms_max=1e3 * lat["max_s"],
                   decode_rounds=rounds, **env)
    return rows


def write_model_card(layout: Layout, rows: list[dict], split: str = "test") -> Path:
    """Write ``zoo/README.md`` (atomically) from ``card_rows``."""
    manifest = json.loads(layout.manifest.read_text()) if layout.manifest.exists() else {}
    header = ["model", "params (M)", "layers", "hidden", "heads", "start", "objective", "training tokens (M)", "training busy-min (CPU s / 2 / 60)",
              f"{split} loss", f"{split} accuracy", "top-1 agreement with target", "decode ms (1 token)", "min–max over rounds"]
    env = rows[0]
    lines = [
        "# The specnb model zoo",
        "",
        "Small Llama models trained offline on CPU on the Python standard library, so every notebook runs without a",
        "network. Load them with `AutoModelForCausalLM.from_pretrained(\"data/zoo/NAME\")` and",
        "`AutoTokenizer.from_pretrained(\"data/zoo/NAME\")`, or `specnb.models.load_model(\"zoo/NAME\")`.",
        "Weights are bfloat16 safetensors (load as float32 on CPU); each draft's `tokenizer.json` is a link to the",
        "target's. Drafts are distilled from `target` (KL to its logits plus LM loss). The width ladder (`w*`, `p0.01`)",
        "starts as the target pruned to its width (Minitron: channels, heads and FFN neurons ranked by activation;",
        "column \"start\"), every other model from a random initialisation; `d2-data` is trained on data alone;",
        "`*-stepN` are snapshots along one draft's training.",
        "",
        f"Corpus: Python {manifest.get('python_version', '?')} standard library, split by file "
        f"(manifest: `corpus_manifest.json`, sha256 `{str(manifest.get('sha256', '?'))[:12]}…`).",
        "",
        f"Every number below was measured by `python -m specnb.zoo card` on held-out {split} files "
        f"({rows[0].get(f'{split}_tokens', 0):,} tokens scored, teacher-forced in windows of 512); decode latency",
        f"is one token after 128 cached tokens on {env['env_cpu']} ({env['env_cpu_isa']} kernels, {env['env_torch_threads']} threads), every model interleaved",
        f"in {env['decode_rounds']} rotated rounds (`specnb.timing.step_latencies`; median, and min–max over rounds);",
        "it depends on the CPU (notebooks 01 and 03 measure it on yours).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        lines.append("| " + " | ".join([
            r["model"], f"{r['params'] / 1e6:.2f}", str(r["layers"]), str(r["hidden"]), str(r["heads"]),
            "target, pruned" if r.get("init") == "pruned" else "random", r["objective"].replace("|", "\\|"), f"{(r['training_tokens'] or 0) / 1e6:.2f}", f"{r['training_minutes'] or float('nan'):.0f}",
            f"{r[f'{split}_loss']:.3f}", f"{r[f'{split}_accuracy']:.3f}", f"{r['top1_agreement_with_target']:.3f}",
            f"{r['decode_ms']:.2f}", f"{r['decode_ms_min']:.2f}–{r['decode_ms_max']:.2f}",
        ]) + " |")
    extended = [r for r in rows if "->" in str(r.get("budget_history", ""))]
    if extended:
        lines += ["", "Trained on past their first budget with `python -m specnb.zoo build --only NAME --budget-minutes M` "
                  "(each extension re-enters the cosine schedule: the learning rate rises, then decays to the floor by the new budget):", ""]
        lines += [f"- {r['model']}: {r['budget_history'].replace('->', '→')}" for r in extended]
    path = layout.zoo / "README.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def read_card(names=None) -> pd.DataFrame:
    """The committed zoo's card table, one row per model (its latest), indexed by model; ``names``:
    those models, in that order. Raises naming ``python -m specnb.zoo card`` when a model has no row."""
    table = read_results(DATA / "results" / "zoo_card.csv")
    if table.empty:
        raise FileNotFoundError("data/results/zoo_card.csv is missing: run python -m specnb.zoo card")
    table = table.drop_duplicates("model", keep="last").set_index("model")
    if names is None:
        return table
    missing = [n for n in names if n not in table.index]
    if missing:
        raise KeyError(f"no card row for {missing}: run python -m specnb.zoo card after building them")
    return table.loc[list(names)]
