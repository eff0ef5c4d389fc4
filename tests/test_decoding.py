"""Greedy speculative decoding is token-identical to the target's own greedy ``generate``."""

import pytest
import torch

from specnb.generate import assisted_generate, autoregressive_generate, speculative_generate

from conftest import FAMILIES, hf_greedy, prompts

N_NEW = 20


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["copy", "perturbed", "random"])
def test_speculative_greedy_equals_target_generate(pairs, family, kind):
    target, drafts = pairs[family]
    draft = drafts[kind]
    for ids in prompts(3):
        ref = hf_greedy(target, ids, N_NEW)
        assert torch.equal(autoregressive_generate(target, ids, N_NEW).sequences, ref)
        for k in range(1, 8):
            out = speculative_generate(target, draft, ids, N_NEW, k=k)
            assert torch.equal(out.sequences, ref), (family, kind, k)
            assert out.num_new_tokens == N_NEW
            assert all(0 <= a <= p <= k for a, p in zip(out.accepted, out.proposed))
            # bookkeeping: prefill + one verify per iteration (+ plain steps), k_i drafts per iteration
            assert out.draft_calls == 1 + sum(out.proposed)
            assert sum(a + 1 for a in out.accepted) + 1 + (out.target_calls - 1 - len(out.accepted)) == N_NEW


@pytest.mark.parametrize("family", FAMILIES)
def test_acceptance_all_some_none(pairs, family):
    target, drafts = pairs[family]
    ids = prompts(1)[0]
    full = speculative_generate(target, drafts["copy"], ids, 40, k=4)
    assert full.accepted == full.proposed and full.acceptance_rate == 1.0
    assert full.mean_accepted_tokens > 4.0  # (40 tokens) / (1 prefill + 8 verifies)
    none = speculative_generate(target, drafts["random"], ids, 40, k=4)
    assert none.acceptance_rate < 0.2
    some = speculative_generate(target, drafts["perturbed"], ids, 40, k=4)
    assert none.acceptance_rate <= some.acceptance_rate <= full.acceptance_rate


def test_perturbed_draft_accepts_something(pairs):
    rates = [speculative_generate(pairs[f][0], pairs[f][1]["perturbed"], ids, 40, k=3).acceptance_rate
             for f in FAMILIES for ids in prompts(3)]
    assert 0.0 < sum(rates) / len(rates) < 1.0


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("n_new", [1, 2, 3, 4, 5, 8])
def test_max_new_tokens_boundaries(pairs, family, n_new):
    target, drafts = pairs[family]
    ids = prompts(1, seed=3)[0]
    ref = hf_greedy(target, ids, n_new)
    for kind in ("copy", "perturbed"):
        for k in (1, 4, 7):
            out = speculative_generate(target, drafts[kind], ids, n_new, k=k)
            assert torch.equal(out.sequences, ref)
            assert all(p <= n_new - 1 for p in out.proposed)  # never drafts past the budget


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_eos_stops_like_generate(pairs, family):
    target, drafts = pairs[family]
    ids = prompts(1, seed=4)[0]
    free = hf_greedy(target, ids, 30)[0, ids.shape[1]:].tolist()
    eos = free[6]  # a token greedy emits at position 6 (perhaps earlier too)
    ref = hf_greedy(target, ids, 30, eos=eos)
    assert ref[0, -1].item() == eos and ref.shape[1] < ids.shape[1] + 30
    for kind in ("copy", "perturbed", "random"):
        for k in (1, 3, 7):
            out = speculative_generate(target, drafts[kind], ids, 30, k=k, eos_token_id=eos)
            assert torch.equal(out.sequences, ref)
    assert torch.equal(autoregressive_generate(target, ids, 30, eos_token_id=eos).sequences, ref)
    assert torch.equal(assisted_generate(target, drafts["copy"], ids, 30, k=3, eos_token_id=eos).sequences, ref)


@pytest.mark.parametrize("family", FAMILIES)
def test_sequential_verify_same_tokens_more_target_calls(pairs, family):
    target, drafts = pairs[family]
    ids = prompts(1, seed=5)[0]
    for kind in ("copy", "perturbed"):
        par = speculative_generate(target, drafts[kind], ids, N_NEW, k=4)
        seq = speculative_generate(target, drafts[kind], ids, N_NEW, k=4, verify="sequential")
        assert torch.equal(par.sequences, seq.sequences)
        assert par.accepted == seq.accepted and par.draft_calls == seq.draft_calls
        # parallel: prefill + one forward per iteration (+ plain steps when one token is left);
        # sequential: one forward per emitted token
        plain = N_NEW - 1 - sum(a + 1 for a in par.accepted)
        assert par.target_calls == 1 + len(par.accepted) + plain and plain <= 1
        assert seq.target_calls == N_NEW
        assert seq.target_calls > par.target_calls


def test_copy_draft_call_counts_exact(pairs):
    target, drafts = pairs["llama"]
    ids = prompts(1)[0]
    out = speculative_generate(target, drafts["copy"], ids, 21, k=4)
    # token 1 from prefill, then 4 iterations of 4 drafts + 1 bonus = 20 tokens
    assert out.accepted == [4, 4, 4, 4] and out.target_calls == 5 and out.draft_calls == 1 + 16
    assert out.per_position_acceptance == [1.0, 1.0, 1.0, 1.0]
    assert out.sources == ["target"] + (["draft"] * 4 + ["bonus"]) * 4
    assert out.mean_accepted_tokens == pytest.approx(21 / 5)


def test_sources_label_every_token(pairs):
    target, drafts = pairs["gpt2"]
    out = speculative_generate(target, drafts["perturbed"], prompts(1)[0], 30, k=3)
    assert len(out.sources) == out.num_new_tokens and out.sources[0] == "target"
    assert out.sources.count("draft") == sum(out.accepted)
    assert out.sources.count("correction") + out.sources.count("bonus") == len(out.accepted)
    assert out.sources.count("bonus") == sum(a == p for a, p in zip(out.accepted, out.proposed))


@pytest.mark.parametrize("family", FAMILIES)
def test_assisted_generate_matches_and_counts(pairs, family):
    target, drafts = pairs[family]
    ids = prompts(1, seed=6)[0]
    ref = hf_greedy(target, ids, N_NEW)
    for k in (1, 3, 5):
        full = assisted_generate(target, drafts["copy"], ids, N_NEW, k=k)
        assert torch.equal(full.sequences, ref)
        assert full.accepted == full.proposed and all(p <= k for p in full.proposed)
        assert full.proposed[0] == k  # constant schedule, confidence threshold off: HF keeps k
        assert len(full.proposed) <= full.target_calls <= len(full.proposed) + 1  # + HF's candidate-free last step
        assert full.draft_calls == sum(full.proposed)
        # HF's first target forward is prefill + verification of the first block: all of it is out at the TTFT mark
        assert full.ttft_tokens == 1 + full.accepted[0] and full.decode_tokens == N_NEW - 1 - full.accepted[0]
        assert full.tokens_per_second == pytest.approx(full.decode_tokens / (full.seconds - full.ttft_seconds))
        none = assisted_generate(target, drafts["random"], ids, N_NEW, k=k)
        assert torch.equal(none.sequences, ref) and none.acceptance_rate < 0.25


def test_assisted_restores_generation_config(pairs):
    target, drafts = pairs["llama"]
    before = drafts["random"].generation_config.to_dict()
    assisted_generate(target, drafts["random"], prompts(1)[0], 5, k=2)
    assert drafts["random"].generation_config.to_dict() == before


def test_result_statistics():
    from specnb.generate import GenerationResult

    r = GenerationResult(sequences=torch.arange(10)[None], prompt_length=4, method="speculative", k=3, accepted=[3, 1, 0, 2], proposed=[3, 3, 3, 2],
                         target_calls=5, draft_calls=12, seconds=2.0, ttft_seconds=0.5)
    assert r.num_new_tokens == 6
    assert r.tokens_per_second == pytest.approx(5 / 1.5)
    late = GenerationResult(sequences=torch.arange(10)[None], prompt_length=4, method="assisted", k=3, seconds=2.0, ttft_seconds=0.5, ttft_tokens=4)
    assert late.decode_tokens == 2 and late.tokens_per_second == pytest.approx(2 / 1.5)  # tokens out at TTFT not counted
    assert r.end_to_end_tokens_per_second == pytest.approx(3.0)
    assert r.mean_accepted_tokens == pytest.approx(6 / 5)
    # judged: 3 (all accepted) + 2 + 1 + 2 (all accepted) = 8; accepted 6
    assert r.acceptance_rate == pytest.approx(6 / 8)
    # position 1: reached 4, accepted 3; position 2: reached 3 (n>=1), accepted 2; position 3: reached 1 (n>=2 and p>=3), accepted 1
    assert r.per_position_acceptance == pytest.approx([3 / 4, 2 / 3, 1 / 1])


class RepeatLast:
    """A draft-free source (no model): proposes the last token k times, greedily."""

    calls = 0

    def __init__(self):
        self.accepted = []

    def prefill(self, prompt):
        pass

    def propose(self, seq, k):
        return torch.tensor([seq[-1]] * k), None

    def accept(self, n, length):
        self.accepted.append((n, length))


@pytest.mark.parametrize("backend", ["eager", "static"])
def test_any_draft_source_plugs_into_the_one_loop(pairs, backend):
    """``speculative_decode`` takes any object with prefill / propose / accept: target greedy
    tokens whatever it proposes, told every outcome, no draft forwards counted."""
    from specnb.generate import ConstantK, speculative_decode
    from specnb.generate.steps import make_steps

    target, _ = pairs["llama"]
    ids = prompts(1, seed=3)[0]
    step, _, _ = make_steps(target, None, backend, ids.shape[1] + N_NEW, 3)
    source = RepeatLast()
    fields = speculative_decode(step, source, ids, N_NEW, ConstantK(3), do_sample=False, temperature=1.0,
                                eos_token_id=None, generator=None)
    assert fields["seq"] == hf_greedy(target, ids, N_NEW)[0].tolist()
    assert fields["draft_calls"] == 0 and len(source.accepted) == len(fields["accepted"]) > 0
    assert [n for n, _ in source.accepted] == fields["accepted"]
    assert fields["target_calls"] == 1 + len(fields["accepted"]) + fields["sources"].count("target") - 1


# --------------------------------------------------------------------------------------------
# Draft-free drafting: prompt lookup
# --------------------------------------------------------------------------------------------


def test_prompt_lookup_proposes_hugging_face_candidates():
    """The proposal rule is Hugging Face's PromptLookupCandidateGenerator's: longest n-gram first,
    leftmost earlier match, continuation clipped at the end of the sequence; none when nothing matches."""
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    from specnb import PromptLookupDraft

    gen = torch.Generator().manual_seed(0)
    checked = found = 0
    for trial in range(300):
        seq = torch.randint(0, 6, (int(torch.randint(2, 40, (1,), generator=gen)),), generator=gen).tolist()
        for ngram, k in ((1, 3), (2, 5), (3, 2)):
            hf = PromptLookupCandidateGenerator(num_output_tokens=k, max_matching_ngram_size=ngram, max_length=10_000)
            candidates, _ = hf.get_candidates(torch.tensor([seq]))
            expected = candidates[0, len(seq):].tolist()
            ours, q = PromptLookupDraft(ngram).propose(seq, k)
            assert ours.tolist() == expected and q is None, (seq, ngram, k)
            checked, found = checked + 1, found + bool(expected)
    assert checked == 900 and 300 < found < 900  # both branches ran
    assert PromptLookupDraft(3).propose([1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3], 4)[0].tolist() == [9, 1, 2, 3]
    with pytest.raises(ValueError, match="max_ngram"):
        PromptLookupDraft(0)
    with pytest.raises(ValueError, match="min_ngram"):
        PromptLookupDraft(2, min_ngram=3)
    assert PromptLookupDraft(2, min_ngram=2).propose([1, 2, 3, 9, 5, 3], 4)[0].tolist() == []  # only a 1-gram matches
    assert PromptLookupDraft(2).propose([1, 2, 3, 9, 5, 3], 4)[0].tolist() == [9, 5, 3]


def test_prompt_lookup_last_takes_the_most_recent_of_the_longest_matches():
    """pick="last": among the earlier occurrences of the longest matching suffix (n <= max_ngram),
    the most recent one; checked against a brute-force search over every n-gram."""
    from specnb import PromptLookupDraft

    def brute(seq, k, max_ngram, min_ngram):
        for n in range(min(max_ngram, len(seq) - 1), min_ngram - 1, -1):
            ends = [j for j in range(n - 1, len(seq) - 1) if seq[j - n + 1 : j + 1] == seq[-n:]]
            if ends:
                return seq[ends[-1] + 1 : ends[-1] + 1 + k]
        return []

    gen = torch.Generator().manual_seed(1)
    found = differs = 0
    for trial in range(300):
        seq = torch.randint(0, 5, (int(torch.randint(2, 40, (1,), generator=gen)),), generator=gen).tolist()
        for max_ngram, min_ngram, k in ((1, 1, 3), (3, 1, 4), (8, 2, 4), (8, 3, 2)):
            ours = PromptLookupDraft(max_ngram, min_ngram, pick="last").propose(seq, k)[0].tolist()
            assert ours == brute(seq, k, max_ngram, min_ngram), (seq, max_ngram, min_ngram, k)
            found += bool(ours)
            differs += ours != PromptLookupDraft(max_ngram, min_ngram).propose(seq, k)[0].tolist()
    assert found > 300 and differs > 100  # matches were found, and the two picks disagreed often
    seq = [1, 2, 7, 8, 5, 1, 2, 9, 5, 1, 2]
    assert PromptLookupDraft(2).propose(seq, 2)[0].tolist() == [7, 8]  # leftmost "1 2"
    assert PromptLookupDraft(2, pick="last").propose(seq, 2)[0].tolist() == [9, 5]  # most recent "1 2"
    assert PromptLookupDraft(3, pick="first").propose(seq, 2)[0].tolist() == [9, 5]  # "5 1 2" occurs once
    with pytest.raises(ValueError, match="pick must be one of"):
        PromptLookupDraft(pick="longest")


@pytest.mark.parametrize("backend", ["eager", "static"])
@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_lookup_is_greedy_exact(pairs, family, backend):
    from specnb import PromptLookupDraft

    target, _ = pairs[family]
    repetitive = torch.tensor([[3, 4, 5, 6, 3, 4, 5, 6, 3, 4]])
    for ids in [repetitive] + prompts(2, seed=5):
        ref = autoregressive_generate(target, ids, N_NEW)
        out = speculative_generate(target, PromptLookupDraft(), ids, N_NEW, k=4, backend=backend)
        assert torch.equal(out.sequences, ref.sequences), (family, backend)
        assert out.draft_calls == 0 and out.method == ("prompt-lookup" if backend == "eager" else f"prompt-lookup-{backend}")
        assert all(1 <= p <= 4 for p in out.proposed) and len(out.sources) == N_NEW
        # a plain target step wherever nothing matched: every forward is prefill, a verification or such a step
        assert out.target_calls == 1 + len(out.accepted) + out.sources.count("target") - 1


@pytest.mark.parametrize("backend", ["eager", "static"])
def test_hybrid_draft_is_greedy_exact_and_uses_both_sources(pairs, backend):
    from specnb import HybridDraft

    target, drafts = pairs["llama"]
    hybrid = HybridDraft(drafts["perturbed"])
    repetitive = torch.tensor([[3, 4, 5, 6, 3, 4, 5, 6, 3, 4]])
    looked, drafted = 0, 0
    for ids in [repetitive] + prompts(3, seed=7):
        ref = autoregressive_generate(target, ids, N_NEW)
        out = speculative_generate(target, hybrid, ids, N_NEW, k=3, backend=backend)
        assert torch.equal(out.sequences, ref.sequences)
        assert hybrid.looked_up + hybrid.drafted == len(out.proposed)  # every iteration proposed something
        assert out.draft_calls >= hybrid.drafted
        looked, drafted = looked + hybrid.looked_up, drafted + hybrid.drafted
    assert looked > 0 and drafted > 0
    with pytest.raises(ValueError, match="compiled"):
        speculative_generate(target, hybrid, repetitive, 4, k=2, backend="compiled")
    with pytest.raises(ValueError, match="draft model"):
        HybridDraft("zoo/d1")
    with pytest.raises(ValueError, match="binds one"):
        HybridDraft(drafts["perturbed"]).prefill(repetitive)
