"""Target-only and speculative forecasting with ``PatchTransformer``s (Leviathan et al., "Fast
Inference from Transformers via Speculative Decoding", ICML 2023, with patches as tokens).

- Decoding runs in a fixed-shape buffer of L = context/P + ceil(horizon/P) patch slots. Every
  forward sees the same shape, so, with causal attention, the prediction at slot t is bitwise
  independent of whatever sits in later slots. Target-only and speculative decoding call the
  same ``score`` on that buffer, which is why tolerance 0 reproduces target-only output exactly.
- Each iteration: the draft rolls out k patches autoregressively; the target scores all of them
  in ONE forward; draft patch j is accepted by a rule, patch by patch; the first rejected patch
  is replaced by the target's own prediction from that same forward; if all k are accepted the
  target's next prediction is a free bonus patch. So every iteration emits accepted + 1 patches.
- Rules, on the instance-normalised scale (units of the context's std):
  ``tolerance``: accept iff mse(draft, target) <= tol and |mean(draft - target)| <= bias
  (seed 001's mse_tol / bias rule); ``gaussian``: accept iff u < exp(-P * mse / (2 sigma^2)),
  u ~ U[0, 1) from a seeded generator, the likelihood ratio N(x_d; mu_t, sigma^2) /
  N(x_d; mu_d, sigma^2) at the draft's point forecast x_d = mu_d (Leviathan's accept step for
  Gaussian heads; the rejected patch is replaced by the target's mean, not a residual sample).
- Horizons that are not a multiple of P (336, 720) are rolled out to ceil(H/P) patches and cut,
  as Timer-XL's own test loop does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .model import PatchTransformer, instance_norm

__all__ = ["Forecast", "score", "target_forecast", "speculative_forecast"]


@dataclass
class Forecast:
    """A batch of forecasts (B, horizon) on the scaled data, with decoding statistics."""

    values: torch.Tensor
    target_calls: int
    draft_calls: int = 0
    proposed: int = 0  # draft patches offered for verification (summed over rows)
    accepted: int = 0  # of which accepted
    emitted: int = 0  # patches written (summed over rows)

    @property
    def acceptance_rate(self) -> float:
        """alpha = accepted / proposed draft patches (NaN when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else float("nan")

    def summary(self) -> dict:
        """Decoding statistics, one row of a timing table (``specnb.timing.compare``)."""
        return {"target_calls": self.target_calls, "draft_calls": self.draft_calls, "acceptance": self.acceptance_rate}


def _check_inputs(model: PatchTransformer, context: torch.Tensor, horizon: int) -> tuple[int, int]:
    p = model.cfg.patch
    if context.ndim != 2:
        raise ValueError(f"context must be (batch, points); got shape {tuple(context.shape)}")
    if context.shape[1] < p or context.shape[1] % p:
        raise ValueError(f"context length {context.shape[1]} must be a positive multiple of the patch length {p}; "
                         f"trim it to {max(p, context.shape[1] // p * p)} points")
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be a positive number of points; got {horizon}")
    n_ctx, n_new = context.shape[1] // p, math.ceil(horizon / p)
    if n_ctx + n_new > model.cfg.max_patches:
        raise ValueError(f"context + horizon = {n_ctx + n_new} patches exceed the model's max_patches="
                         f"{model.cfg.max_patches}; shorten the context or the horizon")
    return n_ctx, n_new


def _buffer(context: torch.Tensor, n_new: int, patch: int):
    """Fixed-shape decoding buffer (B, n_ctx + n_new, P), zeros after the context; mean, std."""
    z, mean, std = instance_norm(context)
    b = context.shape[0]
    buf = torch.zeros(b, z.shape[1] // patch + n_new, patch, dtype=context.dtype, device=context.device)
    buf[:, : z.shape[1] // patch] = z.view(b, -1, patch)
    return buf, mean, std


def _finish(buf: torch.Tensor, n_ctx: int, horizon: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """De-normalise the generated slots and cut to the horizon: (B, horizon)."""
    out = buf[:, n_ctx:].reshape(buf.shape[0], -1)[:, :horizon]
    return out * std + mean


@torch.inference_mode()
def score(model: PatchTransformer, buf: torch.Tensor) -> torch.Tensor:
    """One forward over the whole buffer: (B, L, P) -> (B, L, P) next-patch predictions. The
    single scoring function of both decoding paths."""
    return model(buf)


@torch.inference_mode()
def target_forecast(model: PatchTransformer, context: torch.Tensor, horizon: int) -> Forecast:
    """Target-only autoregressive rollout: one forward per patch, in the fixed-shape buffer."""
    n_ctx, n_new = _check_inputs(model, context, horizon)
    buf, mean, std = _buffer(context, n_new, model.cfg.patch)
    for pos in range(n_ctx, n_ctx + n_new):
        buf[:, pos] = score(model, buf)[:, pos - 1]
    return Forecast(_finish(buf, n_ctx, horizon, mean, std), target_calls=n_new, emitted=n_new * len(buf))


def _accept(draft: torch.Tensor, target: torch.Tensor, rule: str, tol: float, bias: float, sigma: float,
            gen: torch.Generator) -> torch.Tensor:
    """Per-patch acceptance, (B, k, P) x 2 -> (B, k) bool (the rules in the module docstring)."""
    diff = draft - target
    mse = diff.pow(2).mean(-1)  # (B, k), units of the context variance
    if rule == "tolerance":
        return (mse <= tol) & (diff.mean(-1).abs() <= bias)
    ratio = torch.exp(-draft.shape[-1] * mse / (2 * sigma**2)) if sigma > 0 else (mse == 0).to(mse.dtype)
    u = torch.rand(mse.shape, generator=gen, dtype=mse.dtype)
    return u < ratio


def _check_rule(rule: str, k: int, tol: float, bias: float, sigma: float) -> None:
    if rule not in ("tolerance", "gaussian"):
        raise ValueError(f"unknown rule {rule!r}; use 'tolerance' (mse_tol, bias) or 'gaussian' (sigma)")
    if int(k) != k or k < 1:
        raise ValueError(f"k (draft patches per iteration) must be an integer >= 1; got {k}")
    if tol < 0 or bias < 0 or sigma < 0:
        raise ValueError(f"tol, bias and sigma must be >= 0; got tol={tol}, bias={bias}, sigma={sigma}")


@torch.inference_mode()
def speculative_forecast(target: PatchTransformer, draft: PatchTransformer, context: torch.Tensor, horizon: int,
                         k: int = 3, rule: str = "tolerance", tol: float = 0.1, bias: float = math.inf,
                         sigma: float = 0.3, seed: int = 0) -> Forecast:
    """Speculative rollout (module docstring): the draft proposes up to k patches per iteration,
    the target scores them in one forward, accepted patches are kept, the first rejected one is
    replaced by the target's prediction. Rows advance independently. Deterministic given seed."""
    _check_rule(rule, k, tol, bias, sigma)
    n_ctx, n_new = _check_inputs(target, context, horizon)
    if draft.cfg.patch != target.cfg.patch:
        raise ValueError(f"draft patch {draft.cfg.patch} != target patch {target.cfg.patch}; train the draft with the target's patch length")
    buf, mean, std = _buffer(context, n_new, target.cfg.patch)
    size, rows = buf.shape[1], torch.arange(len(buf))
    n = torch.full((len(buf),), n_ctx, dtype=torch.long)  # filled slots per row
    gen = torch.Generator().manual_seed(seed)
    out = Forecast(buf, target_calls=0)
    while bool((n < size).any()):
        kb = (size - n - 1).clamp(min=0, max=k)  # draft patches per row: leave the last slot to the target
        kmax = int(kb.max())
        for j in range(kmax):  # draft rollout, written into the buffer
            pos = (n + j).clamp(max=size - 1)
            pred = score(draft, buf)[rows, pos - 1]
            live = j < kb
            buf[rows[live], pos[live]] = pred[live]
        out.draft_calls += kmax
        tpred = score(target, buf)  # ONE target forward scores every proposal
        out.target_calls += 1
        offs = torch.arange(kmax + 1)
        idx = (n[:, None] - 1 + offs).clamp(max=size - 1)  # (B, kmax + 1) predicting slots n .. n + kmax
        t_next = tpred[rows[:, None], idx]  # (B, kmax + 1, P)
        props = buf[rows[:, None], (idx + 1).clamp(max=size - 1)][:, :kmax]  # (B, kmax, P)
        ok = _accept(props, t_next[:, :kmax], rule, tol, bias, sigma, gen) & (offs[:kmax] < kb[:, None])
        a = ok.to(torch.long).cumprod(1).sum(1)  # accepted prefix per row
        live = n < size
        fix = (n + a).clamp(max=size - 1)
        buf[rows[live], fix[live]] = t_next[rows, a][live]  # replacement (or bonus) from the target
        out.proposed += int(kb[live].sum())
        out.accepted += int(a[live].sum())
        out.emitted += int((a + 1)[live].sum())
        n = torch.where(live, n + a + 1, n)
    out.values = _finish(buf, n_ctx, horizon, mean, std)
    return out
