"""The workbook's own model family, trained offline on CPU from the Python standard library.

No model can be downloaded where the workbook is built, so it ships a small family of
``LlamaForCausalLM`` models (weights in bf16, safetensors) under ``data/zoo/NAME/``, each loadable
with ``AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32)`` and
``AutoTokenizer.from_pretrained(dir)``.

Corpus
    The ``*.py`` sources of the running interpreter's standard library
    (``sysconfig.get_paths()["stdlib"]``). Skipped: ``site-packages``, ``__pycache__``,
    ``lib-dynload``, ``config-*`` (build files), ``encodings/`` (mostly generated charmap tables)
    and ``pydoc_data/`` (one generated 750 kB string of documentation), and any file that is not
    valid UTF-8. ``test/`` and ``idlelib/`` are KEPT: without ``test/`` the corpus would be
    ~14 M characters, below the ~15 M wanted, and the target sees each token about once anyway, so
    more distinct code beats repeated epochs. Files are split BY FILE with
    :func:`split_of`: ``int(sha1(relative posix path), 16) % 100`` -> ``< 90`` train,
    ``< 95`` validation, else test. ``--corpus DIR`` uses every UTF-8 text file under DIR instead
    (same split rule). The manifest ``data/zoo/corpus_manifest.json`` records Python version, files,
    characters and tokens per split and sha256 hashes.

Tokenizer
    Byte-level BPE (``tokenizers``), vocabulary 4096, trained on the train split. ``<|endoftext|>``
    is bos, eos and pad, and separates documents in the token stream
    (``<eot> doc <eot> doc ... <eot>``). Like GPT-2, the tokenizer adds NO special tokens on its
    own; prepend ``tokenizer.bos_token_id`` to start a prompt at a file boundary. Tokenized splits
    are cached as uint16 ``.npy`` under ``data/corpus/`` (git-ignored).

Models (see :func:`zoo_specs` and ``python -m specnb.zoo table``)
    ``target`` (12 layers, d_model 416, 25.4 M parameters); a width ladder at depth 12 that scales d_model, FFN
    and heads (``w0.7``, ``w0.5``, ``w0.25``, ``w0.1``, and ``p0.01`` with ~1% of the target's
    parameters); a depth ladder at equal parameters (``d1``, ``d2``, ``d4``, ``d8``); ``d2-data``
    (d2 trained on data alone); and snapshots of ``w0.1`` along its distillation
    (``w0.1-stepK``). Drafts are distilled from the finished target with
    ``0.5 * KL(target || draft) + 0.5 * CE``; all distilled drafts train as one group, so one
    target forward per batch serves them all.
    The size budget (all weights <= 115 MB in bf16, no file > 95 MB) is checked before training.

Training
    ``python -m specnb.zoo build [--only NAME] [--minutes M]`` trains what is unfinished, target
    first, then the draft groups. Every model resumes from ``data/zoo/.checkpoints/NAME/ckpt.pt``
    (model, optimizer, scheduler, step, data position, RNG), written atomically at least every
    10 minutes, at the end of ``--minutes`` and on SIGTERM / Ctrl-C. A model is finished when it
    has spent its budget (tokens, or "busy minutes" = CPU time / threads, which a loaded or paused
    machine does not eat); it is then evaluated on validation and exported with
    ``training.json``. The loss log is ``data/zoo/.checkpoints/NAME/log.csv``. AdamW, cosine LR
    with warm-up, ``torch.compile``, ``torch.set_num_threads(2)``, batches of 8 x 512 tokens.
    Training runs in float32: this CPU (AVX2, no AVX512-BF16/AMX) multiplies bf16 matrices ~25x
    slower than float32 (1.8 vs 48 GFLOP/s measured), so bf16 autocast (``--autocast``) is off;
    ``torch.compile`` is on because it fuses the memory-bound element-wise ops (~1.5x faster).

Command line
    ``python -m specnb.zoo build [--only NAME|GROUP] [--minutes M] [--corpus DIR] [--zoo DIR]``
    ``python -m specnb.zoo corpus [--corpus DIR]``  (corpus, tokenizer, manifest only)
    ``python -m specnb.zoo table``  (configs, parameters, bf16 sizes, budget check)
    ``python -m specnb.zoo speed [--only NAME]``  (training tokens/s of one config)
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from specnb.paths import DATA, ZOO

EOT = "<|endoftext|>"
VOCAB_SIZE = 4096
SPLITS = ("train", "validation", "test")
STDLIB_SKIP_DIRS = frozenset(
    {"site-packages", "__pycache__", "lib-dynload", "encodings", "pydoc_data"}
)
MAX_TOTAL_BYTES = 115_000_000
MAX_FILE_BYTES = 95_000_000
MAX_POSITIONS = 1024


class BudgetError(ValueError):
    """The zoo's configs would exceed the size cap on shipped weights."""


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where one build reads its corpus and writes caches, checkpoints and models."""

    zoo: Path
    cache: Path
    corpus: Path | None = None

    @property
    def checkpoints(self) -> Path:
        """Directory of per-model training checkpoints (git-ignored)."""
        return self.zoo / ".checkpoints"

    @property
    def manifest(self) -> Path:
        """Path of the committed corpus manifest."""
        return self.zoo / "corpus_manifest.json"

    @property
    def tokenizer_dir(self) -> Path:
        """Cache directory of the trained tokenizer."""
        return self.cache / "tokenizer"


def make_layout(corpus: str | Path | None = None, zoo: str | Path | None = None) -> Layout:
    """Build the layout: default ``data/zoo`` + ``data/corpus``; a custom ``zoo`` keeps caches inside it."""
    zoo_path = Path(zoo).resolve() if zoo else ZOO
    corpus_path = Path(corpus).resolve() if corpus else None
    if zoo_path != ZOO:
        cache = zoo_path / ".corpus"
    elif corpus_path is None:
        cache = DATA / "corpus"
    else:
        cache = DATA / "corpus" / f"custom-{hashlib.sha1(str(corpus_path).encode()).hexdigest()[:8]}"
    return Layout(zoo=zoo_path, cache=cache, corpus=corpus_path)


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


def split_of(relpath: str) -> str:
    """Deterministic split of a file by its relative posix path: sha1 mod 100 -> <90 / <95 / rest."""
    bucket = int(hashlib.sha1(relpath.encode("utf-8")).hexdigest(), 16) % 100
    if bucket < 90:
        return "train"
    return "validation" if bucket < 95 else "test"


def stdlib_dir() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def list_stdlib_files(root: Path) -> list[str]:
    """Relative posix paths of the stdlib ``*.py`` files kept for the corpus (see module docstring)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in STDLIB_SKIP_DIRS and not d.startswith("config-")
        )
        for name in filenames:
            if name.endswith(".py"):
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def list_text_files(root: Path) -> list[str]:
    """Relative posix paths of all non-hidden files under ``root`` (UTF-8 is checked on reading)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in filenames:
            if not name.startswith("."):
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def read_documents(root: Path, relpaths: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Read files as strict UTF-8; return ``{relpath: text}`` and the paths skipped as not UTF-8 or empty."""
    docs, skipped = {}, []
    for rel in relpaths:
        try:
            text = (root / rel).read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(rel)
            continue
        if text.strip():
            docs[rel] = text
        else:
            skipped.append(rel)
    return docs, skipped


def load_corpus(layout: Layout) -> tuple[dict[str, dict[str, str]], dict]:
    """Read the corpus and split it by file; return ``{split: {relpath: text}}`` and source info."""
    if layout.corpus is None:
        root = stdlib_dir()
        relpaths = list_stdlib_files(root)
        source = {"kind": "stdlib", "root": str(root), "excluded_dirs": sorted(STDLIB_SKIP_DIRS) + ["config-*"]}
    else:
        root = layout.corpus
        relpaths = list_text_files(root)
        source = {"kind": "folder", "root": str(root)}
    docs, skipped = read_documents(root, relpaths)
    splits: dict[str, dict[str, str]] = {name: {} for name in SPLITS}
    for rel, text in docs.items():
        splits[split_of(rel)][rel] = text
    source["skipped_files"] = skipped
    return splits, source


def hash_documents(docs: dict[str, str]) -> str:
    """sha256 over sorted ``relpath NUL text NUL`` records: identifies a split's exact content."""
    digest = hashlib.sha256()
    for rel in sorted(docs):
        digest.update(rel.encode("utf-8") + b"\0" + docs[rel].encode("utf-8") + b"\0")
    return digest.hexdigest()


def hash_file(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE):
    """Train a byte-level BPE with ``<|endoftext|>`` as its only special token; return it wrapped."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok):
    """Wrap a ``tokenizers.Tokenizer`` as ``PreTrainedTokenizerFast`` with eot as bos/eos/pad."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(path: Path):
    """Load the cached tokenizer saved with ``save_pretrained``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def encode_split(tokenizer, docs: dict[str, str]) -> np.ndarray:
    """Token stream ``<eot> doc <eot> doc ... <eot>`` of a split (sorted by path) as uint16."""
    eot = tokenizer.convert_tokens_to_ids(EOT)
    texts = [docs[rel] for rel in sorted(docs)]
    pieces = [np.array([eot], dtype=np.uint16)]
    for enc in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
        pieces.append(np.asarray(enc.ids, dtype=np.uint16))
        pieces.append(np.array([eot], dtype=np.uint16))
    return np.concatenate(pieces)


def build_manifest(splits: dict[str, dict[str, str]], source: dict, tokens: dict[str, int], tokenizer_sha: str, vocab_size: int) -> dict:
    """The corpus manifest: interpreter, split rule, files/characters/tokens per split, hashes."""
    per_split = {}
    for name in SPLITS:
        docs = splits[name]
        per_split[name] = {
            "files": len(docs),
            "characters": sum(len(t) for t in docs.values()),
            "tokens": int(tokens[name]),
            "sha256": hash_documents(docs),
        }
    overall = hashlib.sha256("".join(per_split[n]["sha256"] for n in SPLITS).encode()).hexdigest()
    return {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "source": {**source, "skipped_files": len(source["skipped_files"]), "skipped": source["skipped_files"][:50]},
        "split_rule": "int(sha1(relative_posix_path).hexdigest(), 16) % 100: <90 train, <95 validation, else test",
        "document_separator": EOT,
        "tokenizer": {"kind": "byte-level BPE (tokenizers)", "vocab_size": vocab_size, "sha256": tokenizer_sha},
        "splits": per_split,
        "total": {
            "files": sum(per_split[n]["files"] for n in SPLITS),
            "characters": sum(per_split[n]["characters"] for n in SPLITS),
            "tokens": sum(per_split[n]["tokens"] for n in SPLITS),
        },
        "sha256": overall,
    }


def cached_manifest(layout: Layout, expected_sha: str, vocab_size: int) -> dict | None:
    """The cached manifest if tokenizer and token arrays match the corpus hash and vocabulary."""
    path = layout.cache / "manifest.json"
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    files_ok = (layout.tokenizer_dir / "tokenizer.json").exists() and all(
        (layout.cache / f"{n}.npy").exists() for n in SPLITS
    )
    if files_ok and manifest.get("sha256") == expected_sha and manifest["tokenizer"]["vocab_size"] == vocab_size:
        return manifest
    return None


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (tmp file, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def prepare_corpus(layout: Layout, vocab_size: int | None = None, force: bool = False) -> dict:
    """Read, split and tokenize the corpus, training the tokenizer if the cache is stale; return the manifest.

    ``vocab_size`` None means the vocabulary this zoo was built with (its manifest), else ``VOCAB_SIZE``:
    a zoo's models never meet token ids of another tokenizer."""
    if vocab_size is None:
        built = json.loads(layout.manifest.read_text()) if layout.manifest.exists() else {}
        vocab_size = built.get("tokenizer", {}).get("vocab_size", VOCAB_SIZE)
    splits, source = load_corpus(layout)
    if not splits["train"]:
        raise ValueError(f"corpus has no train files (source {source['root']})")
    expected = hashlib.sha256("".join(hash_documents(splits[n]) for n in SPLITS).encode()).hexdigest()
    manifest = None if force else cached_manifest(layout, expected, vocab_size)
    if manifest is None:
        t0 = time.time()
        tokenizer = train_tokenizer(splits["train"].values(), vocab_size)
        layout.tokenizer_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(layout.tokenizer_dir))
        print(f"[zoo] tokenizer trained in {time.time() - t0:.0f}s, vocab {len(tokenizer)}", flush=True)
        tokens = {}
        for name in SPLITS:
            arr = encode_split(tokenizer, splits[name])
            tmp = layout.cache / f"{name}.tmp.npy"
            np.save(tmp, arr)
            os.replace(tmp, layout.cache / f"{name}.npy")
            tokens[name] = len(arr)
        tok_sha = hash_file(layout.tokenizer_dir / "tokenizer.json")
        manifest = build_manifest(splits, source, tokens, tok_sha, vocab_size)
        write_json(layout.cache / "manifest.json", manifest)
    write_json(layout.manifest, manifest)
    return manifest


def load_split(layout: Layout, name: str) -> np.ndarray:
    """A cached token split as a uint16 array (memory-mapped)."""
    return np.load(layout.cache / f"{name}.npy", mmap_mode="r")


# --------------------------------------------------------------------------------------------
# Model specs and the size budget
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo: architecture, training group, teacher, budget and learning rate.

    The budget is ``budget_minutes`` of training (wall time of its group, shared by all members)
    if set, else ``budget_tokens``; ``budget_like="d2"`` means the tokens that model d2 trained on.
    ``snapshots`` are budget fractions at which the model is also exported as ``NAME-stepK``.
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

    @property
    def dims_per_head(self) -> int:
        """Attention head width (defaults to hidden // heads)."""
        return self.head_dim or self.hidden // self.heads


@dataclass(frozen=True)
class TrainSettings:
    """Settings shared by all models of one build (the defaults are the real zoo's)."""

    seq_len: int = 512
    batch_size: int = 8
    micro_batch: int = 8
    seed: int = 1234
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
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
    machine) because throughput on a shared machine varies with load: the target trains 260;
    all distilled drafts train together for 75 (one shared target forward per batch, so they all
    see the same tokens), and ``d1``, the best-pair draft, trains on alone to 140 (about four
    times the group's tokens per minute: it no longer shares the teacher's forward with eight
    drafts); ``d2-data`` sees as many tokens as ``d2``.

    The committed zoo reached these budgets in steps, each a ``build --only NAME --budget-minutes M``
    resume (the cosine schedule re-enters at the old budget's progress, see :func:`extend_budget`):
    target 150 -> 205 -> 260, d1 75 -> 100 -> 140; every model's ``training.json`` lists its steps
    (``budget_history``). A fresh ``build`` trains each over one cosine of its final budget.
    The 150-min target reached 0.360 test accuracy, the 260-min one 0.417; d1's top-1 agreement
    with that target went 0.456 -> 0.523 -> 0.566 at 75, 100 and 140 minutes.
    """
    target = ModelSpec("target", 12, 416, 8, 1024, "target", None, 1.5e-3, head_dim=52, budget_minutes=260)
    draft = dict(budget_tokens=None, teacher="target", budget_minutes=75)
    width = [
        ModelSpec("w0.7", 12, 288, 6, 704, "width", lr=2e-3, head_dim=48, **draft),
        ModelSpec("w0.5", 12, 208, 4, 512, "width", lr=2e-3, head_dim=52, **draft),
        ModelSpec("w0.25", 12, 104, 2, 256, "width", lr=3e-3, head_dim=52, **draft),
        ModelSpec("w0.1", 12, 48, 1, 96, "width", lr=3e-3, head_dim=48, snapshots=(0.05, 0.15, 0.4), **draft),
        ModelSpec("p0.01", 12, 32, 1, 64, "width", lr=3e-3, head_dim=32, **draft),
    ]
    depth = [
        ModelSpec("d1", 1, 208, 4, 576, "depth", lr=3e-3, head_dim=52, **(draft | {"budget_minutes": 140})),
        ModelSpec("d2", 2, 160, 4, 432, "depth", lr=3e-3, head_dim=40, **draft),
        ModelSpec("d4", 4, 128, 2, 352, "depth", lr=3e-3, head_dim=64, **draft),
        ModelSpec("d8", 8, 96, 2, 256, "depth", lr=3e-3, head_dim=48, **draft),
    ]
    data_only = [replace(depth[1], name="d2-data", group="data", teacher=None, budget_minutes=None, budget_like="d2")]
    return [target, *width, *depth, *data_only]


#: the zoo's ladders, as notebooks 02-05 use them (largest first)
WIDTH_LADDER = ("w0.7", "w0.5", "w0.25", "w0.1", "p0.01")
DEPTH_LADDER = ("d1", "d2", "d4", "d8")


def kind_of(name: str) -> str:
    """What a draft is, from its zoo (or ``pruning.pruned_name``) name: "target", "width ladder",
    "depth ladder", "training snapshot", "data only", "pruned" or "other"."""
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
    return "other"


def training_info(name: str, zoo: str | Path | None = None) -> dict:
    """The ``training.json`` a zoo model was exported with (params, shape, objective, training tokens
    and minutes); ``{}`` for a name that is not an exported zoo model (e.g. a pruned draft)."""
    path = Path(zoo or ZOO) / name.removeprefix("zoo/") / "training.json"
    return json.loads(path.read_text()) if path.exists() else {}


def llama_config(spec: ModelSpec, vocab_size: int, eot_id: int = 0):
    """The ``LlamaConfig`` of a spec: tied embeddings, MHA, RoPE, 1024 positions."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden,
        intermediate_size=spec.ffn,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        head_dim=spec.dims_per_head,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        use_cache=True,
        rope_theta=10000.0,
    )


def count_params(spec: ModelSpec, vocab_size: int = VOCAB_SIZE) -> int:
    """Exact parameter count (tied embeddings counted once), from a model built on the meta device."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(spec, vocab_size))
    return sum(p.numel() for p in model.parameters())


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
        params = count_params(spec, vocab_size)
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


# --------------------------------------------------------------------------------------------
# Data stream
# --------------------------------------------------------------------------------------------


class WindowStream:
    """Stateless, resumable sampler of training windows: the batch of step ``s`` depends only on (seed, s).

    Each epoch shuffles the non-overlapping ``seq_len`` chunks of the train stream (with a random
    shift per epoch), so every token is seen about once per epoch.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int):
        """Keep the token stream and derive the number of windows per epoch."""
        if len(tokens) < 2 * seq_len + 2:
            raise ValueError(f"train split has {len(tokens)} tokens, too few for windows of {seq_len}")
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = (len(tokens) - 1 - seq_len) // seq_len
        self._epochs: dict[int, tuple[int, np.ndarray]] = {}

    def epoch_order(self, epoch: int) -> tuple[int, np.ndarray]:
        """Shift and chunk permutation of one epoch (cached)."""
        if epoch not in self._epochs:
            rng = np.random.default_rng([self.seed, epoch])
            self._epochs = {epoch: (int(rng.integers(0, self.seq_len)), rng.permutation(self.per_epoch))}
        return self._epochs[epoch]

    def position(self, step: int) -> dict:
        """Data-RNG state at the start of ``step``: seed, epoch and cursor within the epoch."""
        index = step * self.batch_size
        return {"seed": self.seed, "epoch": index // self.per_epoch, "cursor": index % self.per_epoch}

    def batch(self, step: int) -> torch.Tensor:
        """The ``(batch_size, seq_len + 1)`` int64 windows of ``step``."""
        rows = []
        for i in range(self.batch_size):
            index = step * self.batch_size + i
            shift, perm = self.epoch_order(index // self.per_epoch)
            start = shift + int(perm[index % self.per_epoch]) * self.seq_len
            rows.append(np.asarray(self.tokens[start:start + self.seq_len + 1], dtype=np.int64))
        return torch.from_numpy(np.stack(rows))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


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


def lr_factor(step: int, progress: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay (by budget progress 0..1) to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max(0.0, progress))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def budget_progress(spec: ModelSpec, tokens: int, busy_seconds: float) -> float:
    """Fraction of a model's budget spent: by busy minutes if it has a minute budget, else by tokens.

    Busy seconds are the process's CPU seconds divided by its thread count, i.e. wall seconds of
    an otherwise idle machine: a budget that a shared, loaded or paused machine does not eat.
    """
    if spec.budget_minutes:
        return busy_seconds / (60 * spec.budget_minutes)
    return tokens / spec.budget_tokens


def estimated_steps(spec: ModelSpec, settings: TrainSettings) -> int | None:
    """Optimizer steps of a token budget (None for a minute budget)."""
    if spec.budget_minutes:
        return None
    return max(1, math.ceil(spec.budget_tokens / settings.tokens_per_step))


def make_optimizer(model, spec: ModelSpec, settings: TrainSettings):
    """AdamW with weight decay on matrices only (the LR is set every step by :func:`set_lr`)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr, betas=(0.9, 0.95), eps=1e-8,
    )


def set_lr(member: "Member", settings: TrainSettings) -> float:
    """Set the optimizer's LR from the warm-up + cosine schedule at the member's progress; return it."""
    progress = member.progress
    lr = member.spec.lr * lr_factor(member.step, progress, settings.warmup_steps, settings.min_lr_ratio)
    for group in member.optimizer.param_groups:
        group["lr"] = lr
    return lr


def scheduler_state(member: "Member", settings: TrainSettings) -> dict:
    """The schedule's state as stored in a checkpoint (it is a pure function of step and progress)."""
    return {
        "kind": "linear warm-up + cosine", "peak_lr": member.spec.lr, "warmup_steps": settings.warmup_steps,
        "min_lr_ratio": settings.min_lr_ratio,
        "progress": member.progress,
        "lr": member.optimizer.param_groups[0]["lr"],
    }


def new_model(spec: ModelSpec, settings: TrainSettings, eot_id: int):
    """A freshly initialised float32 ``LlamaForCausalLM`` for a spec (seeded by the spec's name)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(settings.seed + int(hashlib.sha1(spec.name.encode()).hexdigest(), 16) % 10_000)
    model = LlamaForCausalLM(llama_config(spec, settings.vocab_size, eot_id))
    return model.float()


def autocast_ctx(settings: TrainSettings):
    """bf16 autocast on CPU, or a no-op context."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.autocast)


@dataclass
class Member:
    """A model being trained: its spec, module, optimizer state, progress and pending log rows."""

    spec: ModelSpec
    model: torch.nn.Module
    forward: object
    optimizer: torch.optim.Optimizer
    step: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0
    threads: int = 2
    compile_seconds: float = 0.0
    warm: bool = False
    loss_sum: float = 0.0
    loss_count: int = 0
    last_loss: float = float("nan")
    rows: list = field(default_factory=list)
    snapshots_done: list = field(default_factory=list)
    budgets: list = field(default_factory=list)  # every budget it trained under, e.g. ["150 min", "205 min"]

    @property
    def progress(self) -> float:
        """Fraction of the budget spent (>= 1 means finished)."""
        return budget_progress(self.spec, self.tokens, self.busy_seconds)

    @property
    def busy_seconds(self) -> float:
        """CPU seconds spent on this member's steps divided by the thread count."""
        return self.cpu_seconds / self.threads


def checkpoint_path(layout: Layout, name: str) -> Path:
    """Path of a model's resumable checkpoint."""
    return layout.checkpoints / name / "ckpt.pt"


def log_path(layout: Layout, name: str) -> Path:
    """Path of a model's loss log."""
    return layout.checkpoints / name / "log.csv"


def is_finished(layout: Layout, name: str) -> bool:
    """A model is finished once its export (with ``training.json``) exists."""
    return (layout.zoo / name / "training.json").exists()


LOG_FIELDS = ["step", "tokens", "loss", "lr", "tokens_per_s", "elapsed_min", "busy_min", "val_loss"]


def trim_log(path: Path, step: int) -> None:
    """Drop log rows beyond ``step`` (written after the last checkpoint) so a resume never duplicates them."""
    if not path.exists():
        return
    with path.open() as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
    write_log(path, rows, mode="w")


def write_log(path: Path, rows: list[dict], mode: str = "a") -> None:
    """Append (or rewrite) rows of the loss log, writing the header to a new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = mode == "w" or not path.exists()
    with path.open(mode, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def init_member(spec: ModelSpec, layout: Layout, settings: TrainSettings, eot_id: int, tokenizer_sha: str) -> Member:
    """Build a member, resuming model/optimizer/scheduler/progress/RNG from its checkpoint if any."""
    model = new_model(spec, settings, eot_id)
    member = Member(spec, model, model, make_optimizer(model, spec, settings), threads=settings.threads,
                    warm=not settings.compile)
    path = checkpoint_path(layout, spec.name)
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["tokenizer_sha256"] != tokenizer_sha:
            raise RuntimeError(f"{path} was trained with another tokenizer; delete it to start {spec.name} over")
        arch = ("layers", "hidden", "heads", "ffn", "head_dim")
        if any(state["spec"][k] != getattr(spec, k) for k in arch):
            raise RuntimeError(f"{path} has a different architecture than {spec.name}; delete it to start over")
        model.load_state_dict(state["model"])
        member.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        member.step, member.tokens, member.train_seconds = state["step"], state["tokens"], state["train_seconds"]
        member.cpu_seconds = state.get("cpu_seconds", member.train_seconds * member.threads)
        member.compile_seconds = state.get("compile_seconds", 0.0)
        member.snapshots_done = list(state.get("snapshots_done", []))
        saved = replace(spec, **{k: state["spec"].get(k) for k in ("budget_tokens", "budget_minutes", "budget_like")})
        member.budgets = list(state.get("budgets", [describe_budget(saved)]))
        print(f"[zoo] {spec.name}: resumed at step {member.step} ({100 * member.progress:.1f}% of budget)", flush=True)
    if not member.budgets or member.budgets[-1] != describe_budget(spec):  # a new run, or one extended by --budget-minutes
        member.budgets.append(describe_budget(spec))
    trim_log(log_path(layout, spec.name), member.step)
    if settings.compile:
        member.forward = torch.compile(model)
    return member


def save_checkpoint(member: Member, layout: Layout, stream: WindowStream, tokenizer_sha: str, settings: TrainSettings) -> None:
    """Write a member's checkpoint atomically (tmp, then ``os.replace``) and flush its log rows."""
    path = checkpoint_path(layout, member.spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    flush_log(member, layout)
    state = {
        "spec": asdict(member.spec),
        "model": member.model.state_dict(),
        "optimizer": member.optimizer.state_dict(),
        "scheduler": scheduler_state(member, settings),
        "step": member.step,
        "tokens": member.tokens,
        "train_seconds": member.train_seconds,
        "cpu_seconds": member.cpu_seconds,
        "compile_seconds": member.compile_seconds,
        "snapshots_done": member.snapshots_done,
        "budgets": member.budgets,
        "data": stream.position(member.step),
        "torch_rng": torch.get_rng_state(),
        "tokenizer_sha256": tokenizer_sha,
        "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def teacher_targets(teacher, x: torch.Tensor, settings: TrainSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Target probabilities ``(B, T, V)`` and per-token negative entropy ``(B, T)``, computed once per batch."""
    with torch.no_grad(), autocast_ctx(settings):
        logp = F.log_softmax(teacher(input_ids=x).logits.float(), dim=-1)
        probs = logp.exp()
        return probs, (probs * logp).sum(-1)


def member_loss(member: Member, x, y, targets, settings: TrainSettings) -> torch.Tensor:
    """CE on data, or ``kd * KL(target || draft) + (1 - kd) * CE`` when teacher targets are given.

    ``KL(t || d) = sum_v p_t (log p_t - log p_d) = -H(t) - sum_v p_t log p_d``.
    """
    with autocast_ctx(settings):
        logits = member.forward(input_ids=x).logits
    logp = F.log_softmax(logits.float().flatten(0, 1), dim=-1)
    ce = -logp.gather(1, y.reshape(-1, 1)).mean()
    if targets is None:
        return ce
    probs, neg_entropy = targets
    kl = (neg_entropy.flatten() - (probs.flatten(0, 1) * logp).sum(-1)).mean()
    return settings.kd_weight * kl + (1 - settings.kd_weight) * ce


def train_step(member: Member, batch: torch.Tensor, targets, settings: TrainSettings) -> float:
    """One optimizer step (with micro-batch accumulation); return the mean loss."""
    member.model.train()
    member.optimizer.zero_grad(set_to_none=True)
    chunks = range(0, batch.shape[0], settings.micro_batch)
    total = 0.0
    for i in chunks:
        x, y = batch[i:i + settings.micro_batch, :-1], batch[i:i + settings.micro_batch, 1:]
        t = None if targets is None else tuple(a[i:i + settings.micro_batch] for a in targets)
        loss = member_loss(member, x, y, t, settings) / len(chunks)
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(member.model.parameters(), settings.grad_clip)
    member.optimizer.step()
    member.step += 1
    member.tokens += batch.shape[0] * (batch.shape[1] - 1)
    return total


@torch.no_grad()
def evaluate(model, tokens: np.ndarray, settings: TrainSettings, max_tokens: float | None = None, batch: int = 8,
             reference: torch.Tensor | None = None) -> dict:
    """Held-out loss and next-token accuracy on up to ``max_tokens`` of a split (``settings.eval_tokens``
    when None; ``float("inf")`` for the whole split), in windows of ``seq_len`` spread evenly over it
    (``measure.heldout_windows``).

    Also returns ``predictions``, the ``(windows, seq_len)`` argmax tokens. Given the target's
    ``predictions`` as ``reference`` (same split and cap), adds ``agreement``: the fraction of
    positions where both argmaxes match (the greedy acceptance rate of a one-token draft).
    """
    from .measure import heldout_windows

    model.eval()
    cap = settings.eval_tokens if max_tokens is None else min(max_tokens, len(tokens))
    windows = heldout_windows(tokens, seq_len=settings.seq_len, max_tokens=max(int(cap), settings.seq_len))
    loss_sum, correct, count, predictions = 0.0, 0, 0, []
    for arr in windows.split(batch):
        x, y = arr[:, :-1], arr[:, 1:]
        with autocast_ctx(settings):
            logits = model(input_ids=x).logits.float()
        loss_sum += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        predictions.append(logits.argmax(-1))
        correct += (predictions[-1] == y).sum().item()
        count += y.numel()
    metrics = {"loss": loss_sum / count, "accuracy": correct / count, "tokens": count, "predictions": torch.cat(predictions)}
    if reference is not None:
        if reference.shape != metrics["predictions"].shape:
            raise ValueError(f"reference predictions {tuple(reference.shape)} do not match this split and cap "
                             f"{tuple(metrics['predictions'].shape)}: compute them with the same tokens and max_tokens")
        metrics["agreement"] = (reference == metrics["predictions"]).float().mean().item()
    return metrics


def bf16_copy(model):
    """A copy with bf16 parameters, as exported; buffers (RoPE frequencies) stay float32 as on reload."""
    clone = copy.deepcopy(model)
    for param in clone.parameters():
        param.data = param.data.to(torch.bfloat16)
    clone.config.dtype = torch.bfloat16
    return clone


def export_model(model, name: str, spec: ModelSpec, info: dict, layout: Layout, tokenizer, val: np.ndarray, settings: TrainSettings) -> dict:
    """Evaluate the bf16-rounded weights, then save model + tokenizer + ``training.json`` to ``zoo/NAME``."""
    shipped = bf16_copy(model)
    metrics = evaluate(copy.deepcopy(shipped).float(), val, settings)  # .float() is in place: evaluate a copy, ship bf16
    final = layout.zoo / name
    tmp = layout.zoo / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shipped.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    record = {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "layers": spec.layers, "hidden": spec.hidden, "heads": spec.heads,
        "head_dim": spec.dims_per_head, "ffn": spec.ffn, "vocab_size": settings.vocab_size,
        "teacher": spec.teacher, "group": spec.group,
        "objective": "CE" if spec.teacher is None else f"{settings.kd_weight} KL(teacher||draft) + {1 - settings.kd_weight} CE",
        **info,
        "final_val_loss": round(metrics["loss"], 5),
        "val_next_token_accuracy": round(metrics["accuracy"], 5),
        "val_tokens_evaluated": metrics["tokens"],
        "seq_len": settings.seq_len, "batch_size": settings.batch_size, "peak_lr": spec.lr,
        "weights_dtype": "bfloat16",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "exported_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(tmp / "training.json", record)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    print(f"[zoo] exported {name}: val loss {record['final_val_loss']:.3f}, acc {record['val_next_token_accuracy']:.3f}", flush=True)
    return record


def member_info(member: Member) -> dict:
    """Training progress fields of ``training.json``."""
    return {
        "training_steps": member.step,
        "training_tokens": member.tokens,
        "training_minutes": round(member.train_seconds / 60, 2),
        "training_busy_minutes": round(member.busy_seconds / 60, 2),
        "compile_busy_minutes": round(member.compile_seconds / 60, 2),
        "budget": describe_budget(member.spec),
        "budget_history": member.budgets,
        "tokens_per_s": round(member.tokens / max(member.train_seconds, 1e-9), 1),
        "tokens_per_busy_s": round(member.tokens / max(member.busy_seconds, 1e-9), 1),
    }


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
    from transformers import AutoModelForCausalLM

    if not is_finished(layout, name):
        raise RuntimeError(f"teacher {name!r} is not finished; build it first (python -m specnb.zoo build --only {name})")
    model = AutoModelForCausalLM.from_pretrained(str(layout.zoo / name), dtype=torch.float32)
    model.eval().requires_grad_(False)
    return model


def allow_recompiles(models: int, graphs_per_model: int = 4) -> int:
    """Raise dynamo's per-code-object recompile limit so that ``models`` compiled copies of one
    architecture all stay compiled; return the limit now in force.

    Every ``torch.compile``-d Llama shares ``LlamaForCausalLM.forward``, whose cache holds 8 graphs
    by default: a group of 9 drafts plus their teacher passed it, and the last models silently fell
    back to eager (``torch._dynamo hit config.recompile_limit (8)``), training slower.
    """
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, models * graphs_per_model)
    dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 4 * dynamo_config.recompile_limit)
    return dynamo_config.recompile_limit


def group_by_step(members: list[Member]) -> dict[int, list[Member]]:
    """Members keyed by their current step (members at the same step share one batch and teacher pass)."""
    out: dict[int, list[Member]] = {}
    for m in members:
        out.setdefault(m.step, []).append(m)
    return out


def flush_log(member: Member, layout: Layout) -> None:
    """Append the member's pending log rows to its log.csv."""
    if member.rows:
        write_log(log_path(layout, member.spec.name), member.rows)
        member.rows = []


def record_loss(member: Member, loss: float, lr: float, seconds: float, cpu: float, settings: TrainSettings) -> None:
    """Charge a step's wall and CPU time to the member, accumulate its loss, and add a log row every ``log_every`` steps."""
    member.loss_sum += loss
    member.loss_count += 1
    member.last_loss = loss
    member.train_seconds += seconds
    if member.warm:
        member.cpu_seconds += cpu
    else:  # the first step of an invocation compiles: keep that out of the busy-time budget
        member.compile_seconds += cpu / member.threads
        member.warm = True
    if member.step % settings.log_every == 0 or member.progress >= 1:
        member.rows.append({
            "step": member.step, "tokens": member.tokens,
            "loss": round(member.loss_sum / member.loss_count, 5), "lr": f"{lr:.3e}",
            "tokens_per_s": round(settings.tokens_per_step / max(seconds, 1e-9), 1),
            "elapsed_min": round(member.train_seconds / 60, 2), "busy_min": round(member.busy_seconds / 60, 2),
            "val_loss": "",
        })
        member.loss_sum, member.loss_count = 0.0, 0


def train_group(specs: list[ModelSpec], layout: Layout, settings: TrainSettings, minutes: float | None = None, max_steps: int | None = None) -> list[str]:
    """Train a group of models together until finished, ``minutes`` or ``max_steps`` run out, or a signal.

    Members with a teacher share one teacher forward per batch. Returns the names exported now.
    """
    from tqdm import tqdm

    todo = [resolve_budget(s, layout) for s in specs if not is_finished(layout, s.name)]
    if not todo:
        return []
    torch.set_num_threads(settings.threads)
    tokenizer = load_tokenizer(layout.tokenizer_dir)
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
        teacher = torch.compile(teacher) if teacher is not None else None
    members = [init_member(s, layout, settings, eot_id, tok_sha) for s in todo]
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
                t0, c0 = time.time(), time.process_time()
                batch = stream.batch(step)
                targets = teacher_targets(teacher, batch[:, :-1], settings) if teacher is not None else None
                results = [(m, set_lr(m, settings)) for m in group]
                results = [(m, lr, train_step(m, batch, targets if m.spec.teacher else None, settings)) for m, lr in results]
                seconds, cpu = time.time() - t0, time.process_time() - c0
                for m, lr, loss in results:
                    record_loss(m, loss, lr, seconds, cpu, settings)
                    flush_log(m, layout)
                    exported += export_snapshots(m, layout, tokenizer, val, settings)
                del targets
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


def export_snapshots(member: Member, layout: Layout, tokenizer, val, settings: TrainSettings) -> list[str]:
    """Export ``NAME-stepK`` once the member passes each snapshot fraction of its budget."""
    names = []
    for frac in member.spec.snapshots:
        if frac not in member.snapshots_done and member.progress >= frac:
            name = f"{member.spec.name}-step{member.step}"
            export_model(member.model, name, member.spec, {**member_info(member), "snapshot_of_budget": frac},
                         layout, tokenizer, val, settings)
            member.snapshots_done.append(frac)
            names.append(name)
    return names


def checkpoint_all(members: list[Member], layout: Layout, stream: WindowStream, tok_sha: str, val, settings: TrainSettings) -> None:
    """Checkpoint every member; with ``val`` given, also log a quick validation loss (4 windows)."""
    for m in members:
        if val is not None:
            m.rows.append({
                "step": m.step, "tokens": m.tokens, "loss": "", "lr": "", "tokens_per_s": "",
                "elapsed_min": round(m.train_seconds / 60, 2), "busy_min": round(m.busy_seconds / 60, 2),
                "val_loss": round(evaluate(m.model, val, settings, max_tokens=4 * settings.seq_len)["loss"], 5),
            })
        save_checkpoint(m, layout, stream, tok_sha, settings)
        print(f"[zoo] checkpoint {m.spec.name} at step {m.step}, {m.tokens:,} tokens, {m.train_seconds / 60:.1f} min wall, "
              f"{m.busy_seconds / 60:.1f} busy min "
              f"({100 * m.progress:.1f}% of budget)", flush=True)


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
    import fcntl

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
    tokenizer = load_tokenizer(layout.tokenizer_dir)
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


# --------------------------------------------------------------------------------------------
# Model card: data/zoo/README.md, generated from measurements
# --------------------------------------------------------------------------------------------


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
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    from .timing import environment, step_latencies

    settings = replace(settings or TrainSettings(), autocast=False)
    tokens = load_split(layout, split)
    names = exported_models(layout)
    if not names:
        raise ValueError(f"no exported models in {layout.zoo}; build them with `python -m specnb.zoo build`")
    load = lambda n: AutoModelForCausalLM.from_pretrained(str(layout.zoo / n), dtype=torch.float32).eval()  # noqa: E731
    reference = None
    rows, models = [], {}
    for name in tqdm(names, desc=f"card ({split})"):  # target first: its predictions are the reference
        info = json.loads((layout.zoo / name / "training.json").read_text())
        model = models[name] = load(name)
        metrics = evaluate(model, tokens, settings, max_tokens, reference=reference)
        if name == "target":
            reference = metrics["predictions"]
            metrics["agreement"] = 1.0
        rows.append({
            "model": name, "params": info["params"], "layers": info["layers"], "hidden": info["hidden"],
            "heads": info["heads"], "objective": info["objective"], "training_tokens": info.get("training_tokens"),
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
    header = ["model", "params (M)", "layers", "hidden", "heads", "objective", "training tokens (M)", "training busy-min (CPU s / 2 / 60)",
              f"{split} loss", f"{split} accuracy", "top-1 agreement with target", "decode ms (1 token)", "min–max over rounds"]
    env = rows[0]
    lines = [
        "# The specnb model zoo",
        "",
        "Small Llama models trained offline on CPU on the Python standard library, so every notebook runs without a",
        "network. Load them with `AutoModelForCausalLM.from_pretrained(\"data/zoo/NAME\")` and",
        "`AutoTokenizer.from_pretrained(\"data/zoo/NAME\")`, or `specnb.models.load_model(\"zoo/NAME\")`.",
        "Weights are bfloat16 safetensors (load as float32 on CPU). Drafts are distilled from `target`",
        "(KL to its logits plus LM loss); `d2-data` is trained on data alone; `*-stepN` are snapshots along one",
        "draft's training.",
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
            r["objective"].replace("|", "\\|"), f"{(r['training_tokens'] or 0) / 1e6:.2f}", f"{r['training_minutes'] or float('nan'):.0f}",
            f"{r[f'{split}_loss']:.3f}", f"{r[f'{split}_accuracy']:.3f}", f"{r['top1_agreement_with_target']:.3f}",
            f"{r['decode_ms']:.2f}", f"{r['decode_ms_min']:.2f}–{r['decode_ms_max']:.2f}",
        ]) + " |")
    extended = [r for r in rows if "->" in str(r.get("budget_history", ""))]
    if extended:
        lines += ["", "Trained on past their first budget with `python -m specnb.zoo build --only NAME --budget-minutes M` "
                  "(each extension re-enters the cosine schedule: the learning rate rises, then decays to the floor by the new budget):", ""]
        lines += [f"- {r['model']}: {r['budget_history'].replace('->', '→')}" for r in extended]
    path = layout.zoo / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line: ``build``, ``corpus``, ``table``, ``speed`` and ``card``."""
    parser = argparse.ArgumentParser(prog="python -m specnb.zoo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
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
    args = parser.parse_args(argv)
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
        from .results import append_rows, result_path

        # the committed zoo's table lives with the other results; another zoo's stays inside it
        table = result_path("zoo_card") if layout.zoo == ZOO else layout.zoo / "zoo_card.csv"
        append_rows(table, rows, key=["model"])  # rows carry their environment stamp
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


if __name__ == "__main__":
    sys.exit(main())
