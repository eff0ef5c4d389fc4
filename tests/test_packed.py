"""Prepacked linear weights (specnb.generate.packed): the same function as nn.Linear, a copy that
shares every other tensor and leaves the original alone, token identity of every decoder on packed
models (autoregressive, SpS, prompt lookup, EAGLE, HF generate), repacking after an in-place
change, and the errors that name the fix."""

import gc

import pytest
import torch
from torch import nn

from conftest import hf_greedy, prompts
from specnb import autoregressive_generate, speculative_generate
from specnb.eagle import EagleDraft
from specnb.generate import PackedLinear, PromptLookupDraft, hf_generate, packed
from specnb.generate.packed import can_pack
from specnb.models import perturbed_copy, tiny_model

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN is not in this torch build")


@pytest.fixture(scope="module")
def target():
    return tiny_model("llama", layers=2, seed=1)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 5, 9])
def test_packed_linear_computes_what_the_linear_computes(bias, rows):
    torch.manual_seed(0)
    lin = nn.Linear(48, 80, bias=bias)
    p = PackedLinear(lin)
    x = torch.randn(1, rows, 48)
    with torch.no_grad():
        assert p(x).shape == (1, rows, 80)
        torch.testing.assert_close(p(x), lin(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(p(x[0]), lin(x[0]), rtol=1e-5, atol=1e-5)  # 2-D input too
    assert p.weight is not lin.weight


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no oneDNN bf16 kernels")
def test_packed_linear_in_bf16_matches_the_bf16_linear():
    torch.manual_seed(0)
    lin = nn.Linear(64, 96, bias=False).to(torch.bfloat16)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(PackedLinear(lin)(x).float(), lin(x).float(), rtol=2e-2, atol=2e-2)


def test_packed_linear_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="cannot prepack a torch.float16"):
        PackedLinear(nn.Linear(8, 8).half())
    p = PackedLinear(nn.Linear(8, 4))
    with pytest.raises(ValueError, match="input has 6 features; this linear takes 8"):
        p(torch.randn(2, 6))
    with pytest.raises(ValueError, match="cast the input"):
        p(torch.randn(2, 8, dtype=torch.float64))
    assert not can_pack(torch.zeros(2, 2, dtype=torch.float16)) and can_pack(torch.zeros(2, 2))


def test_packed_copy_shares_other_tensors_and_leaves_the_original_alone(target):
    p = packed(target)
    assert p is not target and packed(target) is p  # cached
    linears = [n for n, m in target.named_modules() if isinstance(m, nn.Linear)]
    assert linears and all(isinstance(m, nn.Linear) for n, m in target.named_modules() if n in linears)  # untouched
    pm = dict(p.named_modules())
    assert all(isinstance(pm[n], PackedLinear) for n in linears)
    assert p.model.embed_tokens.weight is target.model.embed_tokens.weight
    assert p.model.norm.weight is target.model.norm.weight
    ids = torch.randint(2, 96, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(p(ids).logits, target(ids).logits, rtol=1e-4, atol=1e-4)


def test_every_decoder_on_packed_models_is_token_identical_to_the_stock_target(target):
    draft = perturbed_copy(target, 0.3, seed=5)
    pt, pd = packed(target), packed(draft)
    accepted = 0
    for ids in prompts(4):
        ref = hf_greedy(target, ids, 16)
        assert torch.equal(autoregressive_generate(pt, ids, 16).sequences, ref)
        assert torch.equal(hf_generate(pt, ids, 16).sequences, ref)
        for k in (1, 4):
            out = speculative_generate(pt, pd, ids, 16, k=k)
            assert torch.equal(out.sequences, ref), k
            accepted += sum(out.accepted)
        assert torch.equal(speculative_generate(pt, PromptLookupDraft(), torch.cat([ids, ids], 1), 16, k=3).sequences,
                           hf_greedy(target, torch.cat([ids, ids], 1), 16))
    assert accepted > 0  # the drafts were right sometimes: the verification's accept path ran on packed kernels


def test_eagle_on_a_packed_target_hooks_the_copy_and_stays_exact(target):
    draft = EagleDraft(target)
    with torch.no_grad():
        for p in draft.body.layers.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * p.std().clamp_min(1e-3))
    pt, pe = packed(target), packed(draft)
    assert isinstance(pe.fc, PackedLinear) and isinstance(pe.lm_head, PackedLinear)
    for ids in prompts(3, seed=4):
        assert torch.equal(speculative_generate(pt, pe, ids, 16, k=3).sequences, hf_greedy(target, ids, 16))
    gc.collect()
    assert not pt.model.norm._forward_hooks and not target.model.norm._forward_hooks


def test_a_weight_changed_in_place_is_packed_again():
    model = tiny_model("llama", layers=1, seed=2)
    first = packed(model)
    ids = torch.randint(2, 96, (1, 5))
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(2.0)
        again = packed(model)
        assert again is not first
        torch.testing.assert_close(again(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(first(ids).logits, model(ids).logits, atol=1e-3)  # the stale copy computes the old model


def test_packing_refuses_a_hooked_model_and_one_with_nothing_to_pack():
    model = tiny_model("llama", layers=1, seed=3)
    handle = model.model.norm.register_forward_hook(lambda *a: None)
    with pytest.raises(ValueError, match="hook the packed copy"):
        packed(model)
    handle.remove()
    assert isinstance(packed(model).lm_head, PackedLinear)
    with pytest.raises(ValueError, match="no linear oneDNN can prepack"):
        packed(tiny_model("llama", layers=1, seed=3, dtype=torch.float16))


def test_a_model_on_the_meta_device_is_returned_as_it_is():
    # the rule a GPU model follows (tests/test_cuda.py checks cuda itself): only CPU weights are packed
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4))
    assert packed(model) is model


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "opt", "qwen2"])
def test_packed_models_of_every_family_decode_the_stock_tokens(family, pairs):
    target, drafts = pairs[family]
    pt, pd = packed(target), packed(drafts["perturbed"])
    assert any(isinstance(m, PackedLinear) for m in pt.modules())  # GPT-2's blocks are Conv1D: only its head packs
    for ids in prompts(3, seed=7):
        ref = hf_greedy(target, ids, 12)
        assert torch.equal(autoregressive_generate(pt, ids, 12).sequences, ref), family
        assert torch.equal(speculative_generate(pt, pd, ids, 12, k=3).sequences, ref), family
