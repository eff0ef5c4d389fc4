"""Leviathan et al. 2023 formulas: known values and limits."""

import numpy as np
import pytest
import torch

from specnb.generate.theory import (alpha_from_distributions, alpha_needed, expected_tokens_per_iteration, optimal_k,
                                   walltime_speedup)


def test_known_values():
    # alpha=0.8, k=4: (1 - 0.8^5) / 0.2 = 3.3616; speedup with c=0.1: 3.3616 / 1.4
    assert expected_tokens_per_iteration(0.8, 4) == pytest.approx(3.3616)
    assert walltime_speedup(0.8, 4, 0.1) == pytest.approx(3.3616 / 1.4)
    assert walltime_speedup(0.8, 4, 0.1, verify_cost=1.2) == pytest.approx(3.3616 / 1.6)
    # the paper's Table/Fig. 3 regime: alpha=0.6, c=0.05 optimum is small k
    assert walltime_speedup(0.6, 2, 0.05) == pytest.approx((1 - 0.6**3) / 0.4 / 1.1)


def test_limits():
    assert expected_tokens_per_iteration(1.0, 4) == 5.0
    assert expected_tokens_per_iteration(0.0, 4) == 1.0
    assert walltime_speedup(1.0, 3, 0.0) == 4.0
    assert walltime_speedup(0.0, 3, 0.2) == pytest.approx(1 / 1.6)
    assert expected_tokens_per_iteration(0.999999, 3) == pytest.approx(4.0, rel=1e-5)  # continuous at 1
    assert expected_tokens_per_iteration(0.5, 0) == 1.0


def test_vectorised():
    a = np.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(expected_tokens_per_iteration(a, 2), [1.0, 1.75, 3.0])
    grid = walltime_speedup(a[:, None], 2, np.array([0.0, 0.5])[None, :])
    assert grid.shape == (3, 2)


def test_optimal_k():
    assert optimal_k(1.0, 0.0, k_max=7) == 7
    assert optimal_k(0.0, 0.1) == 1
    # k=6: (1 - 0.8^7) / 0.2 / 1.6 = 2.4696 beats k=5 (2.4595) and k=7 (2.4477)
    assert optimal_k(0.8, 0.1, k_max=10) == 6
    assert optimal_k(0.8, 0.1, k_max=5) == 5
    ks = range(1, 11)
    best = max(ks, key=lambda k: walltime_speedup(0.8, k, 0.1))
    assert optimal_k(0.8, 0.1, k_max=10) == best


def test_alpha_from_distributions():
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    assert alpha_from_distributions(p, p) == pytest.approx(1.0)
    q = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    assert alpha_from_distributions(p, q) == pytest.approx((0.0 + 0.5) / 2)


@pytest.mark.parametrize("bad", [dict(alpha=1.5), dict(alpha=-0.1), dict(k=-1), dict(k=1.5), dict(c=-0.1)])
def test_bad_arguments(bad):
    args = dict(alpha=0.5, k=2, c=0.1) | bad
    with pytest.raises(ValueError):
        walltime_speedup(args["alpha"], args["k"], args["c"])
    with pytest.raises(ValueError, match="k_max"):
        optimal_k(0.5, 0.1, k_max=0)


def test_alpha_needed_inverts_the_speedup():
    a = alpha_needed(1.5, 3, 0.1, 1.2)
    assert walltime_speedup(a, 3, 0.1, 1.2) == pytest.approx(1.5, abs=1e-4)
    assert walltime_speedup(a - 0.01, 3, 0.1, 1.2) < 1.5
    assert alpha_needed(0.5, 3, 0.1) == 0.0  # reached with no accepted token
    assert np.isnan(alpha_needed(5.0, 3, 0.1))  # beyond (k + 1) / (k c + 1)
    with pytest.raises(ValueError):
        alpha_needed(0.0, 3, 0.1)
