"""EAGLE drafts (specnb.eagle): token identity and exact sampling through the one speculative loop,
the feature bookkeeping against a from-scratch recomputation, the hook's lifetime, storage, and the
resumable feature extraction and training (specnb.distill), on tiny Llama models."""

import gc

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from conftest import PROMPT, K, N_NEW_SAMPLED, V, chi2_pvalue, exact_joint, hf_greedy, prompts, sampled_continuations
from specnb import speculative_generate
from specnb.generate import HybridDraft
from specnb.distill.eagle import EagleSettings, heldout_agreement, train_eagle
from specnb.distill.features import extract_features, load_features
from specnb.eagle import EagleDraft, EagleSource, eagle_loss, load_eagle, load_eagles, own_state, save_eagle, unrolled_features
from specnb.models import tiny_model
from specnb.shallow import load_draft, load_drafts, read_metadata


@pytest.fixture(scope="module")
def target():
    return tiny_model("llama", layers=3, seed=1)


def _perturbed(draft: EagleDraft, seed: int = 0, scale: float = 0.3) -> EagleDraft:
    """A draft whose proposals are neither always right nor always wrong."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.body.layers.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.std().clamp_min(1e-3))
    return draft


def test_eagle_draft_shares_embedding_and_head_and_starts_from_a_target_layer(target):
    d = EagleDraft(target, init_layer=-1)
    assert d.embed_tokens is target.model.embed_tokens and d.lm_head is target.lm_head
    assert torch.equal(d.body.layers[0].mlp.up_proj.weight, target.model.layers[2].mlp.up_proj.weight)
    assert d.body.layers[0].mlp.up_proj.weight is not target.model.layers[2].mlp.up_proj.weight
    h = target.config.hidden_size
    assert torch.equal(d.fc.weight[:, h:], torch.eye(h)) and not d.fc.weight[:, :h].any()
    assert set(own_state(d)) and all("embed_tokens" not in k and "lm_head" not in k for k in own_state(d))
    trainable = {n for n, p in d.named_parameters() if p.requires_grad}
    assert trainable == set(own_state(d)) - {n for n, _ in d.named_buffers()}
    with pytest.raises(ValueError, match="init_layer"):
        EagleDraft(target, init_layer=3)


@pytest.mark.parametrize("backend", ["eager", "static"])
def test_eagle_is_greedy_exact_and_leaves_no_hook(target, backend):
    draft = _perturbed(EagleDraft(target))
    seen = 0
    for ids in prompts(4):
        ref = hf_greedy(target, ids, 20)
        for k in (1, 3, 5):
            out = speculative_generate(target, draft, ids, 20, k=k, backend=backend)
            assert torch.equal(out.sequences, ref), (k, backend)
            assert out.method.startswith("eagle") and out.draft_calls == sum(out.proposed)
            seen += sum(out.accepted)
    assert seen > 0  # some proposals were accepted: the comparison exercised the draft, not only corrections
    gc.collect()
    assert not target.model.norm._forward_hooks


def test_a_hybrid_of_lookup_and_eagle_is_greedy_exact(target):
    draft = _perturbed(EagleDraft(target), seed=2)
    served = {"lookup": 0, "eagle": 0}
    for ids in prompts(4, seed=9):
        ids = torch.cat([ids, ids, ids], dim=1)  # repeats, so lookup finds matches too
        source = HybridDraft(draft)
        out = speculative_generate(target, source, ids, 24, k=3)
        assert torch.equal(out.sequences, hf_greedy(target, ids, 24))
        served["lookup"] += source.looked_up
        served["eagle"] += source.drafted
    assert served["lookup"] > 0 and served["eagle"] > 0
    del source  # the hook lives as long as the source that holds it
    gc.collect()
    assert not target.model.norm._forward_hooks


def test_a_bf16_draft_is_still_greedy_exact_and_leaves_the_target_in_fp32(target):
    draft = _perturbed(EagleDraft(target, torch.arange(0, 96, 2)), seed=5).cast(torch.bfloat16)
    assert draft.fc.weight.dtype == draft.body.layers[0].mlp.up_proj.weight.dtype == draft.lm_head.weight.dtype == torch.bfloat16
    assert target.model.embed_tokens.weight.dtype == target.lm_head.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in target.parameters())
    for ids in prompts(3, seed=6):
        for k in (2, 4):
            out = speculative_generate(target, draft, ids, 16, k=k)
            assert torch.equal(out.sequences, hf_greedy(target, ids, 16))
    full = EagleDraft(target).cast(torch.bfloat16)  # a shared full head stays fp32; hidden states are cast to it
    assert full.lm_head is target.lm_head and full.logits(torch.randn(2, 64, dtype=torch.bfloat16)).dtype == torch.float32


def test_eagle_refuses_the_compiled_backend_and_hf_assisted_generation(target):
    from specnb.generate import hf_generate

    with pytest.raises(ValueError, match="backend='eager' or 'static'"):
        speculative_generate(target, EagleDraft(target), prompts(1)[0], 8, k=2, backend="compiled")
    with pytest.raises(ValueError, match="pass it to speculative_generate"):
        hf_generate(target, prompts(1)[0], 8, draft=EagleDraft(target), k=2)


def _reference_proposal(target, draft, seq: list[int], k: int) -> list[int]:
    """What the draft should propose after ``seq``, recomputed without any cache: the target's
    features of seq[:-1] teacher-forced, then k steps feeding back the draft's own features."""
    with torch.no_grad():
        f = target.model(input_ids=torch.tensor([seq[:-1]])).last_hidden_state  # (1, L-1, H)
        ids = torch.tensor([seq[1:]])
        out = []
        for _ in range(k):
            h = draft.features(ids, f)[:, -1:]
            tok = draft.lm_head(h)[0, -1].argmax()
            out.append(int(tok))
            f, ids = torch.cat([f, h], dim=1), torch.cat([ids, tok.view(1, 1)], dim=1)
    return out


def test_proposals_match_a_cache_free_recomputation(target):
    """Every proposal of the loop (after rejections, crops and bonus tokens) equals the draft run
    from scratch on the target's features of the tokens so far: the source feeds the right rows."""
    draft = _perturbed(EagleDraft(target), seed=3)
    calls = []
    real_propose = EagleSource.propose

    def spy(self, seq, k):
        tokens, q = real_propose(self, seq, k)
        calls.append((list(seq), k, tokens.tolist()))
        return tokens, q

    EagleSource.propose = spy
    try:
        for ids in prompts(3, seed=4):
            speculative_generate(target, draft, ids, 24, k=4)
    finally:
        EagleSource.propose = real_propose
    assert len(calls) > 10
    for seq, k, tokens in calls:
        assert tokens == _reference_proposal(target, draft, seq, k)


def test_eagle_samples_from_the_target():
    tgt = tiny_model("llama", vocab_size=V, hidden=32, layers=3, init_std=0.5, seed=5)
    draft = _perturbed(EagleDraft(tgt), seed=1)
    gen = torch.Generator().manual_seed(7)
    samples, accepted = sampled_continuations(lambda: speculative_generate(
        tgt, draft, PROMPT, N_NEW_SAMPLED, k=K, do_sample=True, generator=gen))
    assert chi2_pvalue(samples, exact_joint(tgt)) > 1e-3
    assert 0 < np.mean(accepted) < K


def test_a_source_needs_the_target_prefill(target):
    source = EagleSource(EagleDraft(target), target)
    with pytest.raises(RuntimeError, match="follow the target's prefill"):
        source.prefill(prompts(1)[0])
    source.close()
    assert not target.model.norm._forward_hooks


def test_save_and_load_round_trip(target, tmp_path):
    ids = torch.tensor([0, 3, 5, 9, 40, 77])
    draft = _perturbed(EagleDraft(target, ids, init_layer=1))
    with torch.no_grad():
        draft.fc.weight.add_(0.01)
    path = save_eagle(draft, tmp_path / "eagle.safetensors", name="eagle", target_name="tiny", record={"steps": 2})
    back = load_eagle(target, path)
    assert back.init_layer == 1 and torch.equal(back.lm_head.ids, ids)
    x = prompts(1)[0]
    f = torch.randn(1, x.shape[1], target.config.hidden_size)
    assert torch.allclose(back.features(x, f), draft.features(x, f), atol=2e-2)
    assert read_metadata(path)["record"] == {"steps": 2}
    assert read_metadata(path)["kind"] == "eagle"
    half = load_eagle(target, path, dtype=torch.bfloat16)
    assert half.fc.weight.dtype == torch.bfloat16 and half.embed_tokens.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="load_eagle"):
        load_draft(target, path)
    assert load_drafts(target, tmp_path) == {} and set(load_eagles(target, tmp_path)) == {"eagle"}
    own = sum(v.numel() for v in own_state(draft).values())
    assert path.stat().st_size < 2 * own + 4096
    with pytest.raises(ValueError, match="train one"):
        load_eagle(target, tmp_path / "missing.safetensors")


def test_feature_extraction_resumes_and_training_learns_and_resumes_exactly(target, tmp_path):
    tokens = np.random.default_rng(0).integers(0, 96, 40 * 32)
    folder = extract_features(target, tokens, tmp_path / "f", seq_len=32, batch=4, chunk=8, autocast=False, progress=False)
    feats, ids = load_features(folder)
    assert feats.shape == (40, 32, target.config.hidden_size) and feats.dtype == torch.bfloat16
    with torch.no_grad():
        direct = target.model(input_ids=ids[:4]).last_hidden_state
    assert torch.allclose(feats[:4].float(), direct, atol=0.05)
    last = sorted(folder.glob("chunk-*.pt"))[-1]
    before = torch.load(last, weights_only=True)["features"]
    last.unlink()
    extract_features(target, tokens, folder, seq_len=32, batch=4, chunk=8, autocast=False, progress=False)
    assert torch.equal(torch.load(last, weights_only=True)["features"], before)

    settings = EagleSettings(steps=10, batch=8, lr=3e-3, warmup=2, autocast=False, eval_every=5)
    val = (feats[32:], ids[32:])
    whole = EagleDraft(target)
    start = heldout_agreement(target, whole, feats[:32], ids[:32])
    log = train_eagle(target, whole, feats[:32], ids[:32], tmp_path / "whole", settings, val=val, progress=False)
    tr = log[log.kind == "train"]
    assert tr.loss.iloc[-3:].mean() < tr.loss.iloc[:3].mean()
    assert heldout_agreement(target, whole, feats[:32], ids[:32]) > start  # it learns the windows it saw
    assert log[log.kind == "eval"].step.tolist() == [5, 10]
    train_eagle(target, EagleDraft(target), feats[:32], ids[:32], tmp_path / "parts", settings, until=4, progress=False)
    resumed = EagleDraft(target)
    train_eagle(target, resumed, feats[:32], ids[:32], tmp_path / "parts", settings, progress=False)
    for (k, a), b in zip(own_state(whole).items(), own_state(resumed).values()):
        assert torch.allclose(a, b, atol=1e-5), k
    with pytest.raises(ValueError, match="share"):
        train_eagle(target, EagleDraft(target), feats[:4], ids[:3], tmp_path / "bad", settings, progress=False)


def test_eagle_loss_weights_its_two_terms(target):
    d = EagleDraft(target)
    f = torch.randn(2, 6, target.config.hidden_size)
    ids = torch.randint(0, 96, (2, 6))
    loss0, m = eagle_loss(d, f, ids, w_cls=0.0)
    loss1, _ = eagle_loss(d, f, ids, w_cls=1.0)
    assert loss0.item() == pytest.approx(m["reg"]) and m["reg"] > 0
    assert loss1.item() == pytest.approx(m["reg"] + m["cls"], rel=1e-5)
    with pytest.raises(ValueError, match="no feature chunks"):
        load_features(f"/nonexistent-{id(d)}")


@torch.no_grad()
def test_unrolled_steps_are_what_the_draft_computes_when_it_drafts_from_its_own_features(target):
    d = _perturbed(EagleDraft(target), seed=2)
    f = torch.randn(2, 9, target.config.hidden_size)
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(3))
    out = unrolled_features(d, f, ids, 3)
    assert [o.shape for o in out] == [(2, 8, target.config.hidden_size)] * 3
    assert torch.allclose(out[0], d.features(ids[:, 1:], f[:, :-1]), atol=1e-5)  # step 1: teacher forcing
    for p in range(6):  # the loop: target features up to entry p, then two steps on its own predictions
        cache = DynamicCache(config=d.config)
        h1 = d.features(ids[:, 1 : p + 2], f[:, : p + 1], cache)[:, -1:]
        h2 = d.features(ids[:, p + 2 : p + 3], h1, cache)
        h3 = d.features(ids[:, p + 3 : p + 4], h2, cache)
        assert torch.allclose(out[0][:, p], h1[:, 0], atol=1e-5)
        assert torch.allclose(out[1][:, p + 1], h2[:, 0], atol=1e-5), p
        assert torch.allclose(out[2][:, p + 2], h3[:, 0], atol=1e-5), p
    with pytest.raises(ValueError, match="steps"):
        unrolled_features(d, f, ids, 0)
    rates = heldout_agreement(target, d, f, ids, steps=3, batch=1)
    goal = target.lm_head(f[:, 2:]).argmax(-1)
    assert len(rates) == 3 and rates[0] == pytest.approx(heldout_agreement(target, d, f, ids))
    assert rates[1] == pytest.approx(float((d.logits(out[1][:, 1:]).argmax(-1) == goal).float().mean()))


def test_eagle_loss_over_steps_averages_each_steps_terms(target):
    d = _perturbed(EagleDraft(target), seed=5)
    f = torch.randn(2, 7, target.config.hidden_size)
    ids = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(1))
    one, m1 = eagle_loss(d, f, ids, w_cls=0.0)
    two, m2 = eagle_loss(d, f, ids, w_cls=0.0, steps=2)
    assert m2["reg"] == pytest.approx(m1["reg"], rel=1e-5) and "top1_s2" in m2 and "top1_s2" not in m1
    with torch.no_grad():
        second = unrolled_features(d, f, ids, 2)[1][:, 1:]
    reg2 = torch.nn.functional.smooth_l1_loss(second, f[:, 2:]).item()
    assert two.item() == pytest.approx((m1["reg"] + reg2) / 2, rel=1e-4)
    two.backward()
    assert d.fc.weight.grad is not None and d.fc.weight.grad.abs().sum() > 0


def test_draft_quality_scores_eagle_on_the_target_features(target):
    from specnb.corpus import heldout_windows
    from specnb.measure import draft_quality

    tokens = np.random.default_rng(1).integers(0, 96, 4 * 33 + 1)
    draft = _perturbed(EagleDraft(target), seed=4)
    q = draft_quality(target, {"eagle": draft}, tokens, seq_len=32, max_tokens=4 * 32, progress=False).set_index("model")
    assert q.loc["eagle", "tokens"] == 4 * 31 and q.loc["target", "tokens"] == 4 * 32
    x = heldout_windows(tokens, seq_len=32, max_tokens=4 * 32)[:, :-1]
    with torch.no_grad():
        f = target.model(input_ids=x).last_hidden_state
        mine = draft.lm_head(draft.features(x[:, 1:], f[:, :-1]))
        p = target.lm_head(f[:, 1:])
    assert q.loc["eagle", "top1_agreement"] == pytest.approx((mine.argmax(-1) == p.argmax(-1)).float().mean().item())
    beta = torch.minimum(p.softmax(-1), mine.softmax(-1)).sum(-1).mean().item()
    assert q.loc["eagle", "expected_alpha"] == pytest.approx(beta, rel=1e-4) and beta > 0


def test_an_eagle_draft_times_and_cards_like_any_draft(target, tmp_path):
    from specnb.bench.real import drafts_card
    from specnb.timing import step_latency

    draft = EagleDraft(target, torch.arange(0, 96, 3))
    assert step_latency(draft, context=8, tokens=1, min_run_time=0.01)["median_s"] > 0  # its decode step runs cached
    save_eagle(draft, tmp_path / "eagle.safetensors", name="eagle", target_name="tiny", record={"steps": 5, "tokens": 640})
    card = drafts_card({"eagle": draft}, tmp_path).iloc[0]
    assert card["layers"] == 1 and card["head_tokens"] == 32 and card["steps"] == 5
    assert card["own_params_M"] * 1e6 == sum(v.numel() for k, v in own_state(draft).items() if "norm" in k or "fc" in k
                                              or "layers" in k)
    assert card["init"].startswith("eagle") and card["dtype"] == "float32"
    assert drafts_card({"eagle": draft.cast(torch.bfloat16)}, tmp_path).iloc[0]["dtype"] == "bfloat16"


def test_on_policy_text_opens_at_documented_functions_and_is_the_targets_greedy_output(target, tmp_path):
    from specnb.distill.onpolicy import function_prompts, greedy_continuations
    from specnb.models import load_tokenizer

    tok = load_tokenizer("zoo/target")
    windows = function_prompts(tok, 5, 24)
    assert windows.shape == (5, 24) and all(tok.decode(w).startswith("def ") for w in windows)
    assert torch.equal(windows, function_prompts(tok, 5, 24)) and not torch.equal(windows, function_prompts(tok, 5, 24, seed=1))
    with pytest.raises(ValueError, match=">= 1"):
        function_prompts(tok, 0, 24)
    ids = torch.randint(2, 96, (3, 6), generator=torch.Generator().manual_seed(0))
    out = greedy_continuations(target, ids, 8, batch=2, autocast=False, progress=False)
    assert out.shape == (3, 14)
    for row in range(3):
        assert torch.equal(out[row : row + 1], hf_greedy(target, ids[row : row + 1], 8))
    kept = greedy_continuations(target, ids, 8, batch=2, autocast=False, out_dir=tmp_path, progress=False)
    assert torch.equal(kept, out) and len(list(tmp_path.glob("chunk-*.pt"))) == 2
    fake = out[:2].clone()
    fake[:, 6:] = 0
    torch.save(fake, tmp_path / "chunk-00000.pt")  # a kept batch is read, not generated again
    assert torch.equal(greedy_continuations(target, ids, 8, batch=2, autocast=False, out_dir=tmp_path, progress=False)[:2], fake)
    with pytest.raises(ValueError, match="other prompts"):
        greedy_continuations(target, ids.flip(0), 8, batch=2, autocast=False, out_dir=tmp_path, progress=False)

