"""Shared fixtures: tiny random models of several families (no network)."""

import os

os.environ.setdefault("SPECNB_PROFILE", "quick")  # tests never write committed artefacts

import pytest
import torch

from specnb.models import perturbed_copy, tiny_model

torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to a busy neighbour

FAMILIES = ["llama", "gpt2", "gpt_neox", "opt", "qwen2"]


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
