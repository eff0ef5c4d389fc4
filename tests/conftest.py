"""Shared fixtures and helpers: tiny random models of several families (no network), HF's own
greedy decoding as the reference, the exact joint distribution of a tiny model's continuations and
a chi-square test against it. Test modules import helpers from here, never from each other."""

import os

os.environ.setdefault("SPECNB_PROFILE", "quick")  # tests never write committed artefacts

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from specnb import paths
from specnb.models import perturbed_copy, tiny_model

torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to a busy neighbour

FAMILIES = ["llama", "gpt2", "gpt_neox", "opt", "qwen2"]


@pytest.fixture(autouse=True)
def quick_outputs_in_tmp_path(request, monkeypatch):
    """A test that takes ``tmp_path`` writes only there: its quick-profile results, figures and
    artifacts go to tmp_path/quick (also for subprocesses, through SPECNB_QUICK_DIR)."""
    if "tmp_path" in request.fixturenames:
        quick = request.getfixturevalue("tmp_path") / "quick"
        monkeypatch.setattr(paths, "QUICK", quick)
        monkeypatch.setenv("SPECNB_QUICK_DIR", str(quick))


@pytest.fixture(scope="session")
def llama50_pair():
    """A 2-layer Llama over 50 tokens and a perturbed copy of it as its draft (peers and headline runs)."""
    target = tiny_model("llama", vocab_size=50, layers=2, hidden=64, seed=1)
    return target, perturbed_copy(target, 0.3, seed=2)


@pytest.fixture(scope="session")
def pairs():
    """family -> (target, {draft kind: draft}) with drafts that accept all, some and none."""
    out = {}
    for fam in FAMILIES:
        target = tiny_model(fam, seed=1)
        out[fam] = (
            target,
            {
                "copy": tiny_model(fam, seed=1),
                "perturbed": perturbed_copy(target, 0.3, seed=5),
                "random": tiny_model(fam, seed=2),
            },
        )
    return out


def prompts(n: int = 3, vocab: int = 96, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab, (1, int(torch.randint(1, 12, (1,), generator=g))), generator=g) for _ in range(n)]


def hf_greedy(model, ids, n, eos=None):
    """The target's own greedy continuation (``generate``), the reference for token identity."""
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                          eos_token_id=eos, pad_token_id=0)


# A tiny vocabulary and 4 new tokens with k = 2: the first iteration drafts 2 tokens and the target
# adds a bonus or correction, so every branch of Algorithm 1 runs; all 4^4 continuations enumerable.
V, N_NEW_SAMPLED, K, RUNS = 4, 4, 2, 3000
PROMPT = torch.tensor([[1, 3, 2]])


def exact_joint(model, temperature: float = 1.0, prompt: torch.Tensor = PROMPT) -> dict[tuple, float]:
    """P(t1..t4 | prompt) at ``temperature`` for all 4^4 continuations, from one batched forward."""
    seqs = torch.tensor(list(itertools.product(range(V), repeat=N_NEW_SAMPLED)))  # (256, 4)
    full = torch.cat([prompt.expand(len(seqs), -1), seqs], dim=1)
    with torch.no_grad():
        logp = torch.log_softmax(model(full).logits.double() / temperature, dim=-1)
    P = prompt.shape[1]
    lp = sum(logp[torch.arange(len(seqs)), P - 1 + i, seqs[:, i]] for i in range(N_NEW_SAMPLED))
    return {tuple(s.tolist()): float(p) for s, p in zip(seqs, lp.exp())}


def chi2_pvalue(samples: list[tuple], probs: dict[tuple, float]) -> float:
    """Chi-square goodness of fit of ``samples`` to ``probs`` (cells with expected count < 5 pooled)."""
    keys = sorted(probs)
    observed = np.array([sum(1 for s in samples if s == k) for k in keys], dtype=float)
    expected = np.array([probs[k] for k in keys]) * len(samples)
    small = expected < 5
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    return float(chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


def sampled_continuations(generate, runs: int = RUNS) -> tuple[list[tuple], list[int]]:
    """``runs`` calls of ``generate()`` (each a GenerationResult): the new tokens of each call, and
    the accepted count of every iteration of every call."""
    samples, accepted = [], []
    for _ in range(runs):
        out = generate()
        samples.append(tuple(out.new_tokens.tolist()))
        accepted.extend(out.accepted)
    return samples, accepted
