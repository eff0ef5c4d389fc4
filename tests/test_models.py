"""The loader: local directories, zoo names, and a fast, helpful failure offline."""

import pytest
import torch

import specnb.models as models
from specnb.models import load_family, load_model, load_spec, tiny_model


def test_local_directory_roundtrip(tmp_path):
    m = tiny_model("gpt2", seed=3)
    m.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), device="cpu")
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(m(ids).logits, loaded(ids).logits)
    assert loaded.dtype == torch.float32 and not loaded.training


def test_zoo_names_resolve(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_zoo_dir", lambda: tmp_path)
    tiny_model("llama", seed=1).save_pretrained(tmp_path / "target")
    assert models.zoo_models() == ["target"]
    assert set(load_family("zoo", device="cpu")) == {"zoo/target"}
    with pytest.raises(ValueError, match="available: target"):
        load_model("zoo/missing")


def test_offline_hub_name_fails_fast_naming_the_zoo(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(ValueError, match="embedded zoo"):
        load_model("EleutherAI/pythia-70m")
    with pytest.raises(ValueError, match="unknown family"):
        load_family("nope")


def test_load_spec():
    t = load_spec("tiny:opt:layers=1:hidden=32")
    assert t.config.num_hidden_layers == 1
    d = load_spec("copy:noise=0.0", target=t)
    assert all(torch.equal(a, b) for a, b in zip(t.parameters(), d.parameters()))
    with pytest.raises(ValueError, match="key=value"):
        load_spec("tiny:llama:layers")
    with pytest.raises(ValueError, match="needs the target"):
        load_spec("copy")


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "opt", "qwen2"])
def test_truncated_copy_is_a_working_shallow_draft(family):
    from specnb.generate import speculative_generate
    from specnb.models import truncated_copy

    t = tiny_model(family, layers=3, init_std=0.02)
    d = truncated_copy(t, 1)
    assert d.config.num_hidden_layers == 1 if hasattr(d.config, "num_hidden_layers") else d.config.n_layer == 1
    assert sum(p.numel() for p in d.parameters()) < sum(p.numel() for p in t.parameters())
    ids = torch.tensor([[3, 4, 5]])
    ref = t.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(speculative_generate(t, d, ids, 12, k=3).sequences, ref)
    assert len(list(t.parameters())) > len(list(d.parameters()))  # the target is untouched
    with pytest.raises(ValueError, match="num_layers"):
        truncated_copy(t, 4)
