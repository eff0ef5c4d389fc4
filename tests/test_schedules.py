"""Draft-length schedules: HF's heuristic rule, specnb's adaptive k, and that any schedule leaves
speculative decoding exact (greedy identity, sampling distribution, call counts)."""

import copy
import itertools

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from specnb.generate import BACKENDS, speculative_generate
from specnb.generate.assisted import CallLog
from specnb.models import perturbed_copy, tiny_model
from specnb.generate.schedules import AdaptiveK, ConstantK, HeuristicK, as_schedule
from specnb.generate.theory import optimal_k

from conftest import chi2_pvalue, hf_greedy, prompts

N_NEW = 20


def schedules():
    return [ConstantK(3), HeuristicK(), HeuristicK(start=1, k_max=4), AdaptiveK(0.2, verify_cost=1.2),
            AdaptiveK(0.05, verify_cost={k: 1 + 0.05 * k for k in range(1, 8)}, loop_cost=0.1, decay=1.0)]


def caps(accepted, n_new, first):
    """The cap min(k, tokens left - 1) before each iteration, ``first`` tokens emitted before the first."""
    out, done = [], first
    for a in accepted:
        out.append(n_new - done - 1)
        done += a + 1
    return out


# --------------------------------------------------------------------------------------------
# The rules themselves
# --------------------------------------------------------------------------------------------


def test_heuristic_rule_scripted():
    # HF: all candidates accepted -> +2, else -1 (floor 1); no upper bound unless k_max
    s = HeuristicK(start=5)
    script = [(5, 5), (7, 7), (3, 9), (0, 8), (1, 7), (0, 6), (0, 5), (0, 4), (0, 3), (0, 2), (0, 1), (0, 1), (1, 1), (3, 3)]
    expected = [5, 7, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1, 1, 3, 5]
    assert s.replay([a for a, _ in script], [p for _, p in script]) == expected
    ks = []
    for a, p in script:
        ks.append(s.next_k())
        assert s.next_k() == ks[-1]  # asking does not change the state
        s.update(a, p)
    assert ks + [s.next_k()] == expected
    s.reset()
    assert s.next_k() == 5
    # a capped iteration (fewer proposed than asked) that is fully accepted still counts as "all"
    assert HeuristicK(start=5).replay([2], [2]) == [5, 7]
    # k_max caps the counter itself: one rejection at the cap drops to k_max - 1
    assert HeuristicK(start=3, k_max=6).replay([3, 5, 6, 2], [3, 5, 6, 6]) == [3, 5, 6, 6, 5]
    assert HeuristicK(start=2, k_min=2).replay([0, 0], [2, 2]) == [2, 2, 2]


def _hf_heuristic_run(target, draft, ids, n, start):
    """HF assisted generation with num_assistant_tokens_schedule='heuristic_transient' (threshold off):
    its sequence and its (accepted, proposed) per iteration, from the forward hooks of CallLog."""
    saved = copy.deepcopy(draft.generation_config)
    draft.generation_config.num_assistant_tokens = start
    draft.generation_config.num_assistant_tokens_schedule = "heuristic_transient"
    draft.generation_config.assistant_confidence_threshold = 0.0
    log = CallLog(target, draft)
    try:
        seqs = target.generate(ids, attention_mask=torch.ones_like(ids), assistant_model=draft, stopping_criteria=[log],
                               generation_config=GenerationConfig(max_new_tokens=n, do_sample=False, pad_token_id=0))
    finally:
        log.remove()
        draft.generation_config = saved
    return seqs, log.iterations(ids.shape[1])


@pytest.mark.parametrize("family,noise", [("llama", 0.1), ("gpt2", 0.3), ("opt", 0.1)])
def test_heuristic_matches_hugging_face(pairs, family, noise):
    """Feeding HF's own per-iteration outcomes to HeuristicK reproduces HF's k sequence (HF caps k at
    the tokens left minus one, as specnb does; HF has no separate prefill token)."""
    target = pairs[family][0]
    draft = perturbed_copy(target, noise, seed=5)
    ids = prompts(1, seed=2)[0]
    seqs, (accepted, proposed) = _hf_heuristic_run(target, draft, ids, 30, start=3)
    assert torch.equal(seqs, hf_greedy(target, ids, 30))
    assert len(set(proposed)) >= 3  # the schedule really moved
    wanted = HeuristicK(start=3).replay(accepted, proposed)[:-1]
    assert proposed == [min(w, c) for w, c in zip(wanted, caps(accepted, 30, first=0))]


def test_adaptive_estimate_and_choice():
    s = AdaptiveK(0.1, verify_cost=1.0, prior=(1.0, 1.0), decay=1.0)
    assert s.alpha == pytest.approx(0.5)
    for a, p in [(3, 4), (4, 4), (0, 2)]:
        s.update(a, p)
    # judged: 3 + 1, 4, 0 + 1 -> 7 successes, 2 failures (GenerationResult.acceptance_rate's counts)
    assert s.alpha == pytest.approx((1 + 7) / (2 + 9))
    decayed = AdaptiveK(0.1, decay=0.5, prior=(1.0, 1.0))
    decayed.update(0, 4)
    decayed.update(4, 4)
    assert decayed.alpha == pytest.approx((1 + 4) / (2 + 4 + 0.5))
    # with scalar costs, the choice is theory.optimal_k at the current estimate
    for c, v in [(0.05, 1.0), (0.2, 1.3), (0.5, 1.0)]:
        s = AdaptiveK(c, verify_cost=v)
        for alpha in np.linspace(0, 1, 21):
            assert s.best_k(alpha) == optimal_k(alpha, c, 7, v), (c, v, alpha)
    # higher alpha, larger k: all-accepted history drives k up, all-rejected drives it down
    high, low = AdaptiveK(0.05), AdaptiveK(0.05)
    for _ in range(30):
        high.update(high.next_k(), high.next_k())
        low.update(0, low.next_k())
    assert high.next_k() == 7 and low.next_k() == 1
    assert high.alpha > 0.95 and low.alpha < 0.1
    ks = [AdaptiveK(0.1).best_k(a) for a in np.linspace(0, 1, 41)]
    assert ks == sorted(ks) and ks[0] == 1 and ks[-1] == 7
    # a costlier draft never asks for more tokens
    assert all(AdaptiveK(0.4).best_k(a) <= AdaptiveK(0.1).best_k(a) for a in np.linspace(0, 1, 41))
    # per-k loop cost that grows with k pulls k* down
    assert AdaptiveK(0.05, loop_cost=lambda k: 0.2 * k).best_k(0.9) < AdaptiveK(0.05).best_k(0.9)


# --------------------------------------------------------------------------------------------
# Exactness with every schedule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("kind", ["copy", "perturbed", "random"])
def test_greedy_identity_and_counts_every_schedule(pairs, family, kind):
    target, drafts = pairs[family]
    for ids in prompts(2, seed=1):
        ref = hf_greedy(target, ids, N_NEW)
        for schedule in schedules():
            out = speculative_generate(target, drafts[kind], ids, N_NEW, k=schedule)
            assert torch.equal(out.sequences, ref), (family, kind, schedule)
            assert out.num_new_tokens == N_NEW
            # bookkeeping as for a constant k: draft prefill + k_i drafts per iteration; target
            # prefill + one verify per iteration (+ a plain step when one token is left)
            assert out.draft_calls == 1 + sum(out.proposed)
            plain = N_NEW - 1 - sum(a + 1 for a in out.accepted)
            assert out.target_calls == 1 + len(out.accepted) + plain and plain <= 1
            assert all(0 <= a <= p for a, p in zip(out.accepted, out.proposed))
            # the k of each iteration is the schedule's, capped at the tokens left
            wanted = schedule.replay(out.accepted, out.proposed)[:-1]
            assert out.proposed == [min(w, c) for w, c in zip(wanted, caps(out.accepted, N_NEW, first=1))]
            assert out.k == (3 if isinstance(schedule, ConstantK) else schedule.name)


def test_copy_draft_heuristic_grows_and_adaptive_goes_long(pairs):
    target, drafts = pairs["llama"]
    ids = prompts(1)[0]
    out = speculative_generate(target, drafts["copy"], ids, 40, k=HeuristicK(start=1))
    assert out.proposed[:4] == [1, 3, 5, 7] and out.accepted == out.proposed
    out = speculative_generate(target, drafts["copy"], ids, 40, k=AdaptiveK(0.1, prior=(1, 1)))
    assert out.proposed[0] == optimal_k(0.5, 0.1) and max(out.proposed) == 7
    assert out.proposed[:3] == sorted(out.proposed[:3])  # alpha_hat only rises
    out = speculative_generate(target, drafts["random"], ids, 40, k=AdaptiveK(0.3, prior=(1, 1)))
    assert out.acceptance_rate < 0.2 and out.proposed[-5:] == [1] * 5


def test_int_k_and_constant_k_agree(pairs):
    target, drafts = pairs["gpt2"]
    ids = prompts(1, seed=3)[0]
    a = speculative_generate(target, drafts["perturbed"], ids, N_NEW, k=4)
    b = speculative_generate(target, drafts["perturbed"], ids, N_NEW, k=ConstantK(4))
    assert torch.equal(a.sequences, b.sequences) and a.proposed == b.proposed and a.k == b.k == 4


def test_calls_are_independent(pairs):
    """The schedule passed in is copied and reset: repeated calls see the same fresh state."""
    target, drafts = pairs["llama"]
    ids = prompts(1, seed=4)[0]
    schedule = HeuristicK(start=2)
    schedule.update(2, 2)  # the caller's object is in some state...
    first = speculative_generate(target, drafts["perturbed"], ids, N_NEW, k=schedule)
    second = speculative_generate(target, drafts["perturbed"], ids, N_NEW, k=schedule)
    assert first.proposed == second.proposed and first.proposed[0] == 2  # ...each call starts from reset()
    assert schedule.next_k() == 4  # and is left untouched
    clone = as_schedule(schedule)
    assert clone is not schedule and clone.next_k() == 2


@pytest.mark.slow
def test_sampling_exact_with_a_moving_k():
    """Speculative sampling with HeuristicK(start=2) still samples the target's distribution. Over 5
    new tokens its k differs from a constant k = 2 (after a full rejection it drafts 1, where the
    constant would draft 2), yet tokens 3..5 follow the target's exact marginal (chi-square, as
    test_sampling does for a constant k)."""
    target = tiny_model("llama", vocab_size=4, hidden=32, layers=2, init_std=0.5, seed=11)
    draft = perturbed_copy(target, 0.5, seed=3)
    prompt, n = torch.tensor([[1, 3, 2]]), 5
    seqs = torch.tensor(list(itertools.product(range(4), repeat=n)))
    with torch.no_grad():
        logp = torch.log_softmax(target(torch.cat([prompt.expand(len(seqs), -1), seqs], 1)).logits.double(), -1)
    joint = sum(logp[torch.arange(len(seqs)), prompt.shape[1] - 1 + i, seqs[:, i]] for i in range(n)).exp()
    marginal = {}
    for s_, pr in zip(seqs.tolist(), joint.tolist()):
        marginal[tuple(s_[2:])] = marginal.get(tuple(s_[2:]), 0.0) + pr
    gen = torch.Generator().manual_seed(99)
    samples, moved = [], 0
    for _ in range(1000):
        out = speculative_generate(target, draft, prompt, n, k=HeuristicK(start=2), do_sample=True, generator=gen)
        samples.append(tuple(out.new_tokens.tolist()[2:]))
        moved += out.accepted[0] == 0 and out.proposed[1:2] == [1]
    assert chi2_pvalue(samples, marginal) > 1e-3
    assert moved > 50  # the schedule really changed k in many runs
    a = speculative_generate(target, draft, prompt, 12, k=AdaptiveK(0.3), do_sample=True,
                             generator=torch.Generator().manual_seed(7))
    b = speculative_generate(target, draft, prompt, 12, k=AdaptiveK(0.3), do_sample=True,
                             generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.sequences, b.sequences)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


class _Zero:
    name = "zero"
    k_max = 4  # bounded, so the compiled backend reaches the next_k check

    def next_k(self):
        return 0

    def update(self, accepted, proposed):
        pass

    def reset(self):
        pass


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad,message", [
    ("4", "schedule"), (4.0, "schedule"), (None, "schedule"), (object(), "schedule"),
    (HeuristicK, "instantiate"), (_Zero(), "next_k"), (0, "k"), (-1, "k"), (True, "k"),
])
def test_bad_k_raises_before_running(pairs, bad, message, backend):
    target, drafts = pairs["llama"]
    calls = []
    handles = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in (target, drafts["copy"])]
    try:
        with pytest.raises(ValueError, match=message):
            speculative_generate(target, drafts["copy"], prompts(1)[0], 8, k=bad, backend=backend)
    finally:
        for h in handles:
            h.remove()
    assert calls == []


def test_bad_schedule_parameters():
    with pytest.raises(ValueError, match="start"):
        HeuristicK(start=0)
    with pytest.raises(ValueError, match="k_min <= start <= k_max"):
        HeuristicK(start=8, k_max=7)
    with pytest.raises(ValueError, match="k "):
        ConstantK(0)
    with pytest.raises(ValueError, match="c "):
        AdaptiveK(-0.1)
    with pytest.raises(ValueError, match="decay"):
        AdaptiveK(0.1, decay=0.0)
    with pytest.raises(ValueError, match="prior"):
        AdaptiveK(0.1, prior=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"verify_cost maps no cost for k = \[3"):
        AdaptiveK(0.1, verify_cost={1: 1.0, 2: 1.1}, k_max=3)
    with pytest.raises(ValueError, match="verify_cost must be finite and > 0"):
        AdaptiveK(0.1, verify_cost=0.0)
    with pytest.raises(ValueError, match="k_min <= k_max"):
        AdaptiveK(0.1, k_min=5, k_max=3)
    with pytest.raises(ValueError, match="accepted <= proposed"):
        HeuristicK().update(3, 2)
    with pytest.raises(ValueError, match="proposed >= 1"):
        AdaptiveK(0.1).update(0, 0)
