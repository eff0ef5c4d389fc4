"""specnb.pruning: pruned Llama models are valid, saveable, cache-correct drafts, and the rankings pick."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from specnb import pruning as P
from specnb.generate import speculative_generate
from specnb.models import tiny_model

N_NEW = 12


def calib(batch: int = 4, length: int = 24, vocab: int = 96, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def hf_greedy(model, ids, n=N_NEW, use_cache=True):
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=0, use_cache=use_cache)
    assert out.shape[1] == ids.shape[1] + n  # no early stop: the comparisons below cover every token
    return out


@torch.no_grad()
def greedy_without_cache(model, ids, n=N_NEW):
    """Greedy decoding by full re-computation at every step: independent of any KV cache."""
    for _ in range(n):
        ids = torch.cat([ids, model(input_ids=ids, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
    return ids


@torch.no_grad()
def logits(model, ids):
    return model(input_ids=ids).logits


def snapshot(model) -> tuple[dict, dict]:
    return {k: v.clone() for k, v in model.state_dict().items()}, model.config.to_dict()


def unchanged(model, snap) -> bool:
    state, config = snap
    now = model.state_dict()
    return model.config.to_dict() == config and now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


def fresh_count(model) -> int:
    """Parameters of a freshly built model of the pruned model's config (the config predicts the count)."""
    return sum(p.numel() for p in LlamaForCausalLM(copy.deepcopy(model.config)).parameters())


@pytest.fixture(scope="module")
def target():
    """4 layers, hidden 64, 4 query heads sharing 2 KV heads (GQA, head_dim 16), FFN 128."""
    model = tiny_model("llama", layers=4, seed=1)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)
    return model


@pytest.fixture(scope="module")
def drafts(target):
    before = snapshot(target)
    out = {
        "depth": P.prune_depth(target, 2, calib()),
        "width": P.prune_width(target, calib(), hidden_size=40, num_kv_heads=1, intermediate_size=50),
    }
    assert unchanged(target, before)  # pruning returns new models and never touches its input
    return out


def test_depth_pruned_model_is_a_consistent_llama(target, drafts):
    d = drafts["depth"]
    assert type(d) is LlamaForCausalLM and d.config.num_hidden_layers == len(d.model.layers) == 2
    assert [layer.self_attn.layer_idx for layer in d.model.layers] == [0, 1]  # the KV cache slots
    assert P.count_parameters(d) == fresh_count(d) == P.count_parameters(d.config)
    assert len(target.model.layers) == 4 and target.config.num_hidden_layers == 4


def test_width_pruned_model_is_a_consistent_llama(drafts):
    w = drafts["width"]
    c = w.config
    assert (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, c.head_dim) == (40, 2, 1, 50, 16)
    layer = w.model.layers[0]
    shapes = {
        "q": layer.self_attn.q_proj.weight.shape, "k": layer.self_attn.k_proj.weight.shape,
        "o": layer.self_attn.o_proj.weight.shape, "gate": layer.mlp.gate_proj.weight.shape,
        "down": layer.mlp.down_proj.weight.shape, "norm": layer.input_layernorm.weight.shape,
        "embed": w.model.embed_tokens.weight.shape, "head": w.lm_head.weight.shape, "final": w.model.norm.weight.shape,
    }
    assert shapes == {"q": (32, 40), "k": (16, 40), "o": (40, 32), "gate": (50, 40), "down": (40, 50), "norm": (40,),
                      "embed": (96, 40), "head": (96, 40), "final": (40,)}
    fresh = LlamaForCausalLM(copy.deepcopy(c))
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in w.state_dict().items()}
    assert P.count_parameters(w) == fresh_count(w)
    assert logits(w, calib(1, 8)).shape == (1, 8, 96)


def test_tied_embeddings_stay_tied():
    config = LlamaConfig(vocab_size=96, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
                         num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=128)
    model = LlamaForCausalLM(config).eval()
    w = P.prune_width(model, calib(), hidden_size=32, num_heads=4)
    assert w.lm_head.weight is w.model.embed_tokens.weight and w.lm_head.weight.shape == (96, 32)
    assert (w.config.num_attention_heads, w.config.num_key_value_heads) == (4, 2)
    assert P.count_parameters(w) == fresh_count(w)


def test_keeping_everything_is_exact(target):
    ids = calib(2, 10, seed=3)
    full_depth = P.prune_depth(target, 4, ids)
    full_width = P.prune_width(target, ids, hidden_size=64, num_kv_heads=2, intermediate_size=128)
    assert full_depth is not target and full_width is not target
    assert torch.equal(logits(full_depth, ids), logits(target, ids))
    assert torch.equal(logits(full_width, ids), logits(target, ids))


@torch.no_grad()
def test_identity_layer_is_dropped_first(target):
    model = copy.deepcopy(target)
    model.model.layers[2].self_attn.o_proj.weight.zero_()
    model.model.layers[2].mlp.down_proj.weight.zero_()  # layer 2 now returns its input
    bi = P.block_importance(model, calib())
    assert bi.shape == (4,) and bi[2].abs() < 1e-6 and bi.argmin() == 2 and (bi[[0, 1, 3]] > 1e-3).all()
    pruned = P.prune_depth(model, 3, scores=bi)
    kept = [layer.self_attn.q_proj.weight for layer in pruned.model.layers]
    assert all(torch.equal(a, model.model.layers[i].self_attn.q_proj.weight) for a, i in zip(kept, [0, 1, 3]))
    ids = calib(2, 10, seed=4)
    torch.testing.assert_close(logits(pruned, ids), logits(model, ids))  # dropping an identity layer is exact


@torch.no_grad()
def test_silent_neurons_heads_and_channels_are_removed_first(target):
    model = copy.deepcopy(target)
    for layer in model.model.layers:
        layer.mlp.down_proj.weight[:, :10] = 0  # neurons 0..9 write nothing
        layer.self_attn.o_proj.weight[:, :32] = 0  # query heads 0, 1 (KV group 0) write nothing
        layer.input_layernorm.weight[5] = 0
        layer.post_attention_layernorm.weight[5] = 0
    model.model.norm.weight[5] = 0  # hidden channel 5 is never read
    scores = P.activation_importance(model, calib())
    assert (scores["neurons"][:, :10] == 0).all() and (scores["neurons"][:, 10:] > 0).all()
    assert (scores["kv_heads"][:, 0] == 0).all() and (scores["kv_heads"][:, 1] > 0).all()
    assert scores["hidden"].argmin() == 5 and scores["hidden"][5] == 0

    ids = calib(2, 10, seed=5)
    narrow = P.prune_width(model, scores=scores, intermediate_size=118, num_kv_heads=1)
    assert torch.equal(narrow.model.layers[0].mlp.gate_proj.weight, model.model.layers[0].mlp.gate_proj.weight[10:])
    assert torch.equal(narrow.model.layers[0].self_attn.k_proj.weight, model.model.layers[0].self_attn.k_proj.weight[16:])
    torch.testing.assert_close(logits(narrow, ids), logits(model, ids))  # removing silent units is exact

    thin = P.prune_width(model, scores=scores, hidden_size=60)  # a multiple of the 4 query heads
    emb, orig = thin.model.embed_tokens.weight, model.model.embed_tokens.weight
    kept = [next(c for c in range(64) if torch.equal(emb[:, j], orig[:, c])) for j in range(60)]
    assert 5 not in kept and kept == sorted(kept)  # the silent channel went first; order is preserved
    with pytest.raises(ValueError, match="multiple of the 4 query heads"):
        P.prune_width(model, scores=scores, hidden_size=63)


@pytest.mark.parametrize("kind", ["depth", "width"])
def test_save_and_load_round_trip(drafts, kind, tmp_path):
    model = drafts[kind]
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    arch = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
            "head_dim", "layer_types", "tie_word_embeddings")
    assert type(loaded) is LlamaForCausalLM
    assert {a: getattr(loaded.config, a, None) for a in arch} == {a: getattr(model.config, a, None) for a in arch}
    ids = calib(1, 7, seed=6)
    assert torch.equal(logits(loaded, ids), logits(model, ids))
    assert torch.equal(hf_greedy(loaded, ids), hf_greedy(model, ids))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_pruned_drafts_keep_speculative_greedy_exact(target, drafts, k):
    ids = calib(1, 5, seed=7)
    reference = hf_greedy(target, ids)
    for draft in drafts.values():
        assert torch.equal(speculative_generate(target, draft, ids, N_NEW, k=k).sequences, reference)


def test_kv_cache_matches_recomputation_after_dropping_layers(target):
    """Keeping layers 1 and 3 leaves the cache slots 0 and 1: a wrong layer_idx would show here."""
    model = P.keep_layers(target, [1, 3])
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    ids = calib(1, 6, seed=8)
    assert torch.equal(hf_greedy(model, ids), greedy_without_cache(model, ids))
    assert torch.equal(hf_greedy(model, ids), hf_greedy(model, ids, use_cache=False))


def test_qwen2_layout_with_qkv_biases():
    """The same slicing works on a Llama-layout family with q/k/v biases and layer_types."""
    model = tiny_model("qwen2", layers=3, seed=2)
    ids = calib(1, 6, seed=9)
    deep = P.prune_depth(model, 2, calib())
    wide = P.prune_width(model, calib(), hidden_size=48, num_kv_heads=1, intermediate_size=64)
    assert deep.config.layer_types == ["full_attention"] * 2
    assert wide.model.layers[0].self_attn.q_proj.bias.shape == (32,)
    for m in (deep, wide):
        assert P.count_parameters(m) == P.count_parameters(m.config)
        assert torch.equal(hf_greedy(m, ids), greedy_without_cache(m, ids))
        assert torch.equal(speculative_generate(model, m, ids, N_NEW, k=3).sequences, hf_greedy(model, ids))


def test_prune_to_params_is_the_largest_model_within_budget(target):
    total = P.count_parameters(target)
    budget = int(0.6 * total)
    ids = calib()
    deep = P.prune_to_params(target, budget, ids, how="depth")
    assert P.count_parameters(deep) <= budget < P.count_parameters(P.keep_layers(target, range(deep.config.num_hidden_layers + 1)))

    wide = P.prune_to_params(target, budget, ids, how="width")
    n = P.dims(target)
    shape = (wide.config.hidden_size, wide.config.num_key_value_heads, wide.config.intermediate_size)
    candidates = {P.width_at(n, x) for x in range(1, n["hidden"] + 1)}  # every uniform scaling
    assert shape in candidates and wide.config.hidden_size % wide.config.num_attention_heads == 0
    counts = [P.count_parameters(P.set_width(copy.deepcopy(target.config), *c, 2, 16)) for c in candidates]
    assert P.count_parameters(wide) == max(c for c in counts if c <= budget) <= budget  # the largest that fits
    assert P.count_parameters(P.prune_to_params(target, total + 10, ids, how="width")) == total
    with pytest.raises(ValueError, match="below the smallest depth-pruned model"):
        P.prune_to_params(target, 1000, ids, how="depth")
    with pytest.raises(ValueError, match="'depth' or 'width'"):
        P.prune_to_params(target, budget, ids, how="both")


def test_distillation_kl_is_kl_div(target, drafts):
    ids = calib(2, 9, seed=10)
    t, s = logits(target, ids).log_softmax(-1).flatten(0, 1), logits(drafts["width"], ids).log_softmax(-1).flatten(0, 1)
    expected = torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean").item()
    assert P.distillation_kl(drafts["width"], target, ids) == pytest.approx(expected, rel=1e-4)
    assert P.distillation_kl(target, target, ids) == pytest.approx(0.0, abs=1e-5)


def test_heal_reduces_kl_to_the_teacher(target):
    student = P.prune_width(target, calib(), hidden_size=48, intermediate_size=64)
    frozen = snapshot(target)
    tokens = np.random.default_rng(0).integers(2, 96, 3000).astype(np.uint16)
    history = P.heal(student, target, tokens, steps=20, lr=1e-2, batch=4, seq_len=32, progress=False)
    assert len(history["loss"]) == 20 and history["tokens"] == 20 * 4 * 32
    assert history["kl_end"] < 0.8 * history["kl_start"]
    assert np.mean(history["loss"][-5:]) < np.mean(history["loss"][:5])
    assert not student.training and unchanged(target, frozen)


def test_bad_inputs_name_the_fix(target):
    ids = calib()
    frozen = snapshot(target)
    cases = [
        (lambda: P.prune_depth(tiny_model("gpt2"), 1, ids), "LlamaForCausalLM-style models .* got GPT2LMHeadModel"),
        (lambda: P.prune_depth(target, 0, ids), r"num_layers must be an integer in 1..4"),
        (lambda: P.prune_depth(target, 5, ids), r"num_layers must be an integer in 1..4"),
        (lambda: P.prune_depth(target, 2), "give calib_ids"),
        (lambda: P.prune_width(target, ids, hidden_size=65), r"hidden_size must be an integer in 1..64"),
        (lambda: P.prune_width(target, ids, num_kv_heads=3), r"num_kv_heads must be an integer in 1..2"),
        (lambda: P.prune_width(target, ids, num_heads=3), "num_heads must be a multiple of 2.*try 2"),
        (lambda: P.prune_width(target, ids, num_heads=6), r"num_heads must be an integer in 1..4"),
        (lambda: P.prune_width(target, ids, num_heads=4, num_kv_heads=1), "disagree"),
        (lambda: P.prune_width(target, ids, intermediate_size=0), r"intermediate_size must be"),
        (lambda: P.block_importance(target, ids[0]), r"shape \(batch, seq_len\)"),
        (lambda: P.block_importance(target, ids.float()), "integer torch.Tensor"),
        (lambda: P.activation_importance(target, ids + 96), "outside the vocabulary"),
        (lambda: P.keep_layers(target, [1, 1]), "distinct integers in 0..3"),
        (lambda: P.heal(target, target, np.arange(10), steps=1), "too few for windows"),
        (lambda: P.heal(target, target, np.arange(90), steps=None, seq_len=8), "give steps or minutes"),
        (lambda: P.heal(target, tiny_model("llama", vocab_size=50), np.arange(90), steps=1, seq_len=8), "vocabularies differ"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert unchanged(target, frozen)


def test_prune_pairs_save_and_load_round_trip(tmp_path, monkeypatch):
    """The matched-budget family of notebook 03: both shapes, healed and not, saved atomically and
    reloaded with identical logits by a later notebook."""
    import numpy as np

    from specnb import paths
    from specnb.pruning import count_parameters, load_pruned, prune_pairs, save_pruned

    monkeypatch.setattr(paths, "QUICK", tmp_path)  # quick profile in tests: artifacts go under QUICK
    assert load_pruned() == {}
    with pytest.raises(FileNotFoundError, match="run notebooks/03_depth_vs_width.ipynb first"):
        load_pruned(required=True)
    target = tiny_model("llama", layers=4, hidden=64, heads=4, vocab_size=96, seed=3)
    calib = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(0))
    tokens = np.random.default_rng(0).integers(0, 96, 4000)
    models, table = prune_pairs(target, [0.5], calib, tokens, heal_steps=3, heal_minutes=None, progress=False)
    assert list(models) == ["depth-50%", "depth-50%+heal", "width-50%", "width-50%+heal"]
    assert (table["params"] <= 0.5 * count_parameters(target)).all()
    assert table.set_index("name").loc["depth-50%", "layers"] < 4 and table.set_index("name").loc["width-50%", "layers"] == 4
    healed = table[table["healed"]]
    assert healed["kl_start"].notna().all() and healed["heal_seconds"].gt(0).all()
    assert (healed["heal_tokens"] == 3 * 8 * 128).all() and (table.loc[~table["healed"], "heal_tokens"] == 0).all()  # equal tokens, both ways
    save_pruned(models)
    assert not list((tmp_path / "artifacts" / "pruned").glob(".*"))  # no temporary folder left behind
    back = load_pruned(device="cpu")
    assert sorted(back) == sorted(models)
    x = calib[:1]
    with torch.no_grad():
        for name, model in models.items():
            assert torch.equal(model(x).logits, back[name](x).logits), name
    with pytest.raises(ValueError, match="fractions"):
        prune_pairs(target, [1.5], calib, tokens)
