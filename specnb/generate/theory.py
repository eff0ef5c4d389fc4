"""Speculative decoding theory, after Leviathan, Kalman & Matias, "Fast Inference from Transformers
via Speculative Decoding", ICML 2023 (arXiv:2211.17192).

Notation (the paper's):
- alpha: expected acceptance rate, the probability that one draft token is accepted (Sec. 3.1);
- k (the paper's gamma): draft tokens proposed per iteration;
- c: cost of one draft step relative to one target step (Sec. 3.2).

Every function accepts Python scalars or NumPy arrays (broadcasting), so the same code draws the
heat maps of notebook 05. alpha = 1 and alpha = 0 are handled exactly (no 0/0).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "expected_tokens_per_iteration",
    "walltime_speedup",
    "alpha_from_distributions",
    "optimal_k",
    "alpha_needed",
]


def _check_alpha(alpha):
    a = np.asarray(alpha, dtype=float)
    if np.any((a < 0) | (a > 1)) or np.any(np.isnan(a)):
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha!r}")
    return a


def _check_k(k):
    kk = np.asarray(k)
    if np.any(kk < 0) or np.any(kk != np.floor(kk)):
        raise ValueError(f"k must be a non-negative integer; got {k!r}")
    return kk.astype(float)


def expected_tokens_per_iteration(alpha, k):
    """E[#tokens emitted per iteration] = (1 - alpha^(k+1)) / (1 - alpha)   (Leviathan et al., Eq. 1).

    Equals k + 1 at alpha = 1 (every draft token accepted plus the target's bonus token) and 1 at
    alpha = 0 (the target's own token). This is tau, tokens per target call.
    """
    a, kk = _check_alpha(alpha), _check_k(k)
    one = np.isclose(a, 1.0)
    safe = np.where(one, 0.5, a)
    out = np.where(one, kk + 1.0, (1.0 - safe ** (kk + 1.0)) / (1.0 - safe))
    return out.item() if out.ndim == 0 else out


def walltime_speedup(alpha, k, c, verify_cost=1.0):
    """Expected walltime improvement (1 - alpha^(k+1)) / ((1 - alpha)(k c + 1))   (Thm 3.8).

    ``verify_cost`` generalises the "+1" of the denominator: the cost of the target scoring k+1
    tokens in one forward, relative to one single-token target step. The paper assumes 1 (enough
    parallel compute); on a CPU it is larger than 1 (``specnb.timing.step_latency`` measures it),
    and a planner that ignores it over-predicts.
    """
    c_ = np.asarray(c, dtype=float)
    v = np.asarray(verify_cost, dtype=float)
    if np.any(c_ < 0):
        raise ValueError(f"c (draft/target cost ratio) must be >= 0; got {c!r}")
    if np.any(v <= 0):
        raise ValueError(f"verify_cost must be > 0; got {verify_cost!r}")
    out = np.asarray(expected_tokens_per_iteration(alpha, k)) / (_check_k(k) * c_ + v)
    return out.item() if out.ndim == 0 else out


def alpha_from_distributions(p, q) -> float:
    """alpha = E[sum_x min(p(x), q(x))] = E[1 - D_LK(p, q)]   (Leviathan et al., Def. 3.2 and Cor. 3.6).

    ``p`` (target) and ``q`` (draft) are probability tensors of shape (..., vocab); the
    expectation is the mean over all leading positions.
    """
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape (..., vocab); got {tuple(p.shape)} and {tuple(q.shape)}")
    beta = torch.minimum(p, q).sum(dim=-1)
    return float(beta.double().mean())


def optimal_k(alpha, c, k_max: int = 7, verify_cost=1.0) -> int:
    """The k in 1..k_max that maximises ``walltime_speedup`` (ties go to the smaller k).

    Leviathan et al. (Sec. 3.3) choose gamma by maximising Thm 3.8 numerically; this does the same.
    When even the best k gives a speedup below 1, speculation does not pay: check
    ``walltime_speedup(alpha, optimal_k(...), c) < 1``.
    """
    if int(k_max) < 1:
        raise ValueError(f"k_max must be >= 1; got {k_max!r}")
    ks = np.arange(1, int(k_max) + 1)
    speedups = [float(walltime_speedup(alpha, int(k), c, verify_cost)) for k in ks]
    return int(ks[int(np.argmax(speedups))])


def alpha_needed(speedup: float, k: int, c: float, verify_cost: float = 1.0) -> float:
    """The smallest alpha at which ``walltime_speedup(alpha, k, c, verify_cost)`` reaches ``speedup``
    (it rises with alpha), or nan when even alpha = 1 falls short: (k + 1) / (k c + verify_cost)."""
    from scipy.optimize import brentq

    if speedup <= 0:
        raise ValueError(f"speedup must be > 0; got {speedup!r}")
    gap = lambda a: float(walltime_speedup(a, k, c, verify_cost)) - speedup
    if gap(1.0) < 0:
        return float("nan")
    if gap(0.0) >= 0:
        return 0.0
    return float(brentq(gap, 0.0, 1.0, xtol=1e-6))
