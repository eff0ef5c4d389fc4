"""Speculative sampling emits tokens distributed exactly as the target's (Leviathan et al., Thm 3.1).

Tiny vocabulary (4 tokens), 4 new tokens with k = 2, so the first iteration drafts 2 tokens and the
target adds a bonus or correction: every branch of Algorithm 1 is exercised. The exact target joint
of the 4 tokens is enumerated with one batched forward; a chi-square test (cells with expected
count < 5 pooled) must not reject at p = 0.001. Seeds are fixed, so the test is deterministic.
"""

import numpy as np
import pytest
import torch

from specnb.generate import speculative_generate
from specnb.models import perturbed_copy, tiny_model

from conftest import K, PROMPT, RUNS, V, chi2_pvalue, exact_joint, sampled_continuations
from conftest import N_NEW_SAMPLED as N_NEW

TEMP = 1.0


@pytest.fixture(scope="module")
def target():
    return tiny_model("llama", vocab_size=V, hidden=32, layers=2, init_std=0.5, seed=11)


@pytest.mark.slow
@pytest.mark.parametrize("draft_kind,temperature", [("good", TEMP), ("bad", TEMP), ("good", 0.6), ("bad", 1.7)])
def test_speculative_sampling_matches_target_distribution(target, draft_kind, temperature):
    if draft_kind == "good":
        draft = perturbed_copy(target, 0.5, seed=3)
    else:
        draft = tiny_model("llama", vocab_size=V, hidden=32, layers=2, init_std=0.5, seed=99)
    p = exact_joint(target, temperature)
    q = exact_joint(draft, temperature)
    # the test has power: the draft's own distribution is far from the target's
    assert 0.5 * sum(abs(p[s] - q[s]) for s in p) > 0.1
    gen = torch.Generator().manual_seed(1234)
    samples, accepted = sampled_continuations(lambda: speculative_generate(
        target, draft, PROMPT, N_NEW, k=K, do_sample=True, temperature=temperature, generator=gen))
    assert chi2_pvalue(samples, p) > 1e-3
    # and draws from the draft alone would be rejected by the same test
    rng = np.random.default_rng(0)
    keys = sorted(q)
    draft_samples = [keys[i] for i in rng.choice(len(keys), size=RUNS, p=np.array([q[k] for k in keys]) / sum(q.values()))]
    assert chi2_pvalue(draft_samples, p) < 1e-6
    # both accept and reject branches ran
    assert 0 < np.mean(accepted) < K


def test_sampling_is_reproducible_and_sequential_agrees(target):
    draft = perturbed_copy(target, 0.5, seed=3)
    a = speculative_generate(target, draft, PROMPT, 12, k=3, do_sample=True, generator=torch.Generator().manual_seed(7))
    b = speculative_generate(target, draft, PROMPT, 12, k=3, do_sample=True, generator=torch.Generator().manual_seed(7))
    c = speculative_generate(target, draft, PROMPT, 12, k=3, do_sample=True, verify="sequential",
                             generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.sequences, c.sequences)
    assert c.target_calls >= a.target_calls


@pytest.mark.slow
def test_prompt_lookup_sampling_matches_target_distribution(target):
    """A deterministic proposal judged as a point mass keeps the target's distribution exactly."""
    from specnb import PromptLookupDraft

    prompt = torch.tensor([[1, 3, 2, 1, 3]])  # the lookup finds continuations from the first token on
    p = exact_joint(target, TEMP, prompt=prompt)
    gen = torch.Generator().manual_seed(99)
    runs = []

    def generate():
        runs.append(speculative_generate(target, PromptLookupDraft(1), prompt, N_NEW, k=K, do_sample=True, temperature=TEMP,
                                         generator=gen))
        return runs[-1]

    samples, _ = sampled_continuations(generate)
    assert sum(sum(r.proposed) for r in runs) > RUNS and chi2_pvalue(samples, p) > 1e-3


@pytest.mark.slow
def test_hybrid_sampling_matches_target_distribution(target):
    """Looked-up tokens judged as point masses and model-drafted ones with the model's q, mixed
    within one sequence, keep the target's distribution exactly."""
    from specnb import HybridDraft

    prompt = torch.tensor([[1, 3, 2, 1, 3]])  # bigram (3, x) was seen only for x = 2
    p = exact_joint(target, TEMP, prompt=prompt)
    gen = torch.Generator().manual_seed(5)
    hybrid = HybridDraft(perturbed_copy(target, 0.5, seed=3), max_ngram=2, min_ngram=2)  # bigrams only: both sides serve
    served = [0, 0]

    def generate():
        out = speculative_generate(target, hybrid, prompt, N_NEW, k=K, do_sample=True, temperature=TEMP, generator=gen)
        served[0], served[1] = served[0] + hybrid.looked_up, served[1] + hybrid.drafted
        return out

    samples, _ = sampled_continuations(generate)
    assert min(served) > RUNS // 10  # both sides served many iterations
    assert chi2_pvalue(samples, p) > 1e-3
