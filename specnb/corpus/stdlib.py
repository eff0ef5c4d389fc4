"""The zoo's corpus and tokenizer: where a build lives, which files it reads, how they are split and tokenized.

- Constants: ``EOT`` (the one special token), ``VOCAB_SIZE``, ``SPLITS``, ``STDLIB_SKIP_DIRS``,
  ``MAX_POSITIONS`` (context length of tokenizer and models).
- ``Layout`` / ``make_layout``: the folders of one build (zoo, cache, optional custom corpus).
- Corpus: ``stdlib_dir``, ``list_stdlib_files``, ``list_text_files``, ``read_documents``,
  ``load_corpus`` and the split rule ``split_of``; ``hash_documents`` / ``hash_file`` (sha256).
- Tokenizer: ``train_tokenizer``, ``wrap_tokenizer``, ``load_corpus_tokenizer``, ``encode_split``.
- ``build_manifest`` / ``cached_manifest`` / ``prepare_corpus``: read, split, tokenize and cache
  once, and write the manifest; ``load_split`` memory-maps a cached split.

Corpus
    The ``*.py`` sources of the running interpreter's standard library
    (``sysconfig.get_paths()["stdlib"]``). Skipped: ``site-packages``, ``__pycache__``,
    ``lib-dynload``, ``config-*`` (build files), ``encodings/`` (mostly generated charmap tables),
    ``pydoc_data/`` (one generated string of documentation), and any file that is not valid UTF-8.
    ``test/`` and ``idlelib/`` are kept: the target sees each token about once, so more distinct
    code beats repeated epochs. Files are split BY FILE with :func:`split_of`:
    ``int(sha1(relative posix path), 16) % 100`` -> ``< 90`` train, ``< 95`` validation, else test.
    ``--corpus DIR`` uses every UTF-8 text file under DIR instead (same split rule). The manifest
    ``data/zoo/corpus_manifest.json`` records the Python version, files, characters and tokens per
    split, and sha256 hashes.

Tokenizer
    Byte-level BPE (``tokenizers``; byte-level as in GPT-2, Radford et al. 2019), trained on the
    train split. ``<|endoftext|>`` is bos, eos and pad, and separates documents in the token stream
    (``<eot> doc <eot> doc ... <eot>``). Like GPT-2's, the tokenizer adds NO special tokens on its
    own; prepend ``tokenizer.bos_token_id`` to start a prompt at a file boundary. Tokenized splits
    are cached as uint16 ``.npy`` under ``data/corpus/`` (git-ignored).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..atomic import atomic_path, write_json
from ..paths import DATA, ZOO

EOT = "<|endoftext|>"
VOCAB_SIZE = 4096
SPLITS = ("train", "validation", "test")
STDLIB_SKIP_DIRS = frozenset(
    {"site-packages", "__pycache__", "lib-dynload", "encodings", "pydoc_data"}
)
MAX_POSITIONS = 1024


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


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with ``<|endoftext|>`` as its only special token; return it wrapped."""
    tok = Tokenizer(BPE())
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


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a ``tokenizers.Tokenizer`` as ``PreTrainedTokenizerFast`` with eot as bos/eos/pad."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def load_corpus_tokenizer(path: Path):
    """Load the cached tokenizer saved with ``save_pretrained``."""
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


# --------------------------------------------------------------------------------------------
# Manifest and cache
# --------------------------------------------------------------------------------------------


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


def prepare_corpus(layout: Layout, vocab_size: int | None = None, force: bool = False) -> dict:
    """Read, split and tokenize the corpus, training the tokenizer if the cache is stale; return the manifest.

    ``vocab_size`` None means the vocabulary this zoo was built with (its manifest), else ``VOCAB_SIZE``:
    a zoo's models never meet token ids of another tokenizer. Token arrays and manifests are written
    atomically (``specnb.atomic``)."""
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
            with atomic_path(layout.cache / f"{name}.npy") as tmp:  # tmp ends in .npy: np.save adds no suffix
                np.save(tmp, arr)
            tokens[name] = len(arr)
        tok_sha = hash_file(layout.tokenizer_dir / "tokenizer.json")
        manifest = build_manifest(splits, source, tokens, tok_sha, vocab_size)
        write_json(layout.cache / "manifest.json", manifest)
    write_json(layout.manifest, manifest)
    return manifest


def load_split(layout: Layout, name: str) -> np.ndarray:
    """A cached token split as a uint16 array (memory-mapped)."""
    return np.load(layout.cache / f"{name}.npy", mmap_mode="r")
