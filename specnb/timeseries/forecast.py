"""Target-only and speculative forecasting with ``PatchTransformer``s (Leviathan et al., "Fast
Inference from Transformers via Speculative Decoding", ICML 2023, with patches as tokens).

- Decoding fills a buffer of L = context/P + ceil(horizon/P) patch slots (plus k scratch slots
  when cached). With ``cache=True`` (default) each model keeps a ``KVCache`` and a forward feeds
  only the patches its cache lacks: one per draft step, k + 1 per verify, one per target-only
  step; rows that finish leave the batch. With ``cache=False`` every forward re-scores the whole
  fixed-shape buffer, so the prediction at slot t is bitwise independent of later slots and
  tolerance 0 reproduces target-only output exactly (cached, it matches to float rounding).
- Each iteration: the draft rolls out k patches autoregressively; the target scores all of them
  in ONE forward; draft patch j is accepted by a rule, patch by patch; the first rejected patch
  is replaced by the target's own prediction from that same forward; if all k are accepted the
  target's next prediction is a free bonus patch. So every iteration emits accepted + 1 patches.
- Rules, on the instance-normalised scale (units of the context's std):
  ``tolerance``: accept iff mse(draft, target) <= tol and |mean(draft - target)| <= bias
  (seed 001's mse_tol / bias tests); ``gaussian``: accept iff u < exp(-P * mse / (2 sigma^2)),
  u ~ U[0, 1) from a seeded generator, the likelihood ratio N(x_d; mu_t, sigma^2) /
  N(x_d; mu_d, sigma^2) at the draft's point forecast x_d = mu_d (Leviathan's accept step for
  Gaussian heads; the rejected patch is replaced by the target's mean, not a residual sample);
  ``seed001``: both at once, our reading of seed 001's sigma / bias / mse_tol (it gives no code).
- Horizons that are not a multiple of P (336, 720) are rolled out to ceil(H/P) patches and cut,
  as Timer-XL's own test loop does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .model import KVCache, PatchTransformer, instance_norm, new_cache

__all__ = ["RULES", "Forecast", "score", "target_forecast", "speculative_forecast"]


@dataclass
class Forecast:
    """A batch of forecasts (B, horizon) on the scaled data, with decoding statistics."""

    values: torch.Tensor
    target_calls: int
    draft_calls: int = 0
    proposed: int = 0  # draft patches offered for verification (summed over rows)
    accepted: int = 0  # of which accepted
    emitted: int = 0  # patches written (summed over rows)
    row_proposed: torch.Tensor | None = None  # (B,) per row, for CIs over windows
    row_accepted: torch.Tensor | None = None

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
    """One forward over the whole buffer: (B, L, P) -> (B, L, P) next-patch predictions."""
    return model(buf)


def _step(model: PatchTransformer, buf: torch.Tensor, pos: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    """Predictions of slots pos + 1: buffer (B, S, P), slots pos (B, w) -> (B, w, P). Without a
    cache the whole fixed-shape buffer is re-scored; with one only the w patches at pos are fed."""
    rows = torch.arange(len(buf), device=buf.device)[:, None]
    if cache is None:
        return score(model, buf)[rows, pos]
    return model(buf[rows, pos], pos=pos, cache=cache)


@torch.inference_mode()
def target_forecast(model: PatchTransformer, context: torch.Tensor, horizon: int, cache: bool = True) -> Forecast:
    """Target-only autoregressive rollout, one forward per patch: with ``cache`` one patch per
    step (KV cache), else the whole fixed-shape buffer re-scored each step."""
    n_ctx, n_new = _check_inputs(model, context, horizon)
    buf, mean, std = _buffer(context, n_new, model.cfg.patch)
    b = len(buf)
    kv = new_cache(model, b, buf.shape[1], buf) if cache else None
    pos = torch.arange(n_ctx, device=buf.device).expand(b, -1)  # the first step feeds every context slot
    for t in range(n_ctx, n_ctx + n_new):
        buf[:, t] = _step(model, buf, pos, kv)[:, -1]
        pos = torch.full((b, 1), t, device=buf.device)
    return Forecast(_finish(buf, n_ctx, horizon, mean, std), target_calls=n_new, emitted=n_new * b)


def _accept(draft: torch.Tensor, target: torch.Tensor, rule: str, tol: float, bias: float, sigma: float,
            gen: torch.Generator) -> torch.Tensor:
    """Per-patch acceptance, (B, k, P) x 2 -> (B, k) bool (the rules in the module docstring)."""
    diff = draft - target
    mse = diff.pow(2).mean(-1)  # (B, k), units of the context variance
    within = (mse <= tol) & (diff.mean(-1).abs() <= bias)
    if rule == "tolerance":
        return within
    ratio = torch.exp(-draft.shape[-1] * mse / (2 * sigma**2)) if sigma > 0 else (mse == 0).to(mse.dtype)
    u = torch.rand(mse.shape, generator=gen, dtype=mse.dtype).to(mse.device)  # a CPU generator, any device
    return (u < ratio) & within if rule == "seed001" else u < ratio


RULES = ("tolerance", "gaussian", "seed001")


def _check_rule(rule: str, k: int, tol: float, bias: float, sigma: float) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use 'tolerance' (tol, bias), 'gaussian' (sigma) or 'seed001' (all three)")
    if int(k) != k or k < 1:
        raise ValueError(f"k (draft patches per iteration) must be an integer >= 1; got {k}")
    if tol < 0 or bias < 0 or sigma < 0:
        raise ValueError(f"tol, bias and sigma must be >= 0; got tol={tol}, bias={bias}, sigma={sigma}")


@torch.inference_mode()
def speculative_forecast(target: PatchTransformer, draft: PatchTransformer, context: torch.Tensor, horizon: int,
                         k: int = 3, rule: str = "tolerance", tol: float = 0.1, bias: float = math.inf,
                         sigma: float = 0.3, seed: int = 0, cache: bool = True) -> Forecast:
    """Speculative rollout (module docstring): the draft proposes up to k patches per iteration,
    the target scores them in one forward, accepted patches are kept, the first rejected one is
    replaced by the target's prediction. Rows advance independently and leave the batch when
    done. With ``cache`` both models keep a KV cache (a draft step feeds one patch, a verify k + 1);
    without, each forward re-scores the fixed-shape buffer. Deterministic given seed."""
    _check_rule(rule, k, tol, bias, sigma)
    n_ctx, n_new = _check_inputs(target, context, horizon)
    if draft.cfg.patch != target.cfg.patch:
        raise ValueError(f"draft patch {draft.cfg.patch} != target patch {target.cfg.patch}; train the draft with the target's patch length")
    size = n_ctx + n_new
    scratch = k if cache else 0  # slots past the horizon, so that every row can feed k + 1 patches
    if cache and size + scratch > min(target.cfg.max_patches, draft.cfg.max_patches):
        raise ValueError(f"context + horizon + k = {size + scratch} patches exceed max_patches; lower k or the horizon")
    full, mean, std = _buffer(context, n_new + scratch, target.cfg.patch)
    dev = full.device
    buf, left = full, torch.arange(len(full), device=dev)  # live rows and their index in ``full``
    n = torch.full((len(full),), n_ctx, dtype=torch.long, device=dev)  # filled slots per row
    tkv, dkv = (new_cache(target, len(full), full.shape[1], full), new_cache(draft, len(full), full.shape[1], full)) if cache else (None, None)
    gen = torch.Generator().manual_seed(seed)
    out = Forecast(full, target_calls=0, row_proposed=torch.zeros(len(full), dtype=torch.long, device=dev),
                   row_accepted=torch.zeros(len(full), dtype=torch.long, device=dev))
    offs = torch.arange(k + 1, device=dev)
    first = True
    while len(buf):
        b, rows = len(buf), torch.arange(len(buf), device=dev)
        kb = (size - n - 1).clamp(min=0, max=k)  # draft patches per row: the last slot is the target's
        kmax = int(kb.max())
        props = []
        for j in range(kmax):  # draft rollout; the first step also feeds what the cache lacks
            if j == 0:
                pos = torch.arange(n_ctx, device=dev).expand(b, -1) if first else torch.stack(((n - 2).clamp(min=0), n - 1), 1)
            else:
                pos = (n - 1 + j)[:, None]
            pred = _step(draft, buf, pos.clamp(max=buf.shape[1] - 1), dkv)[:, -1]  # (b, P) prediction of slot n + j
            live = j < kb
            buf[rows[live], (n + j)[live]] = pred[live]
            props.append(pred)
        out.draft_calls += kmax
        # ONE target forward scores every proposal: slots n-1 .. n-1+kmax predict slots n .. n+kmax
        vpos = (n[:, None] - 1 + offs[: kmax + 1])
        if first:
            vpos = torch.cat((torch.arange(n_ctx - 1, device=dev).expand(b, -1), vpos), 1)
        t_next = _step(target, buf, vpos.clamp(max=buf.shape[1] - 1), tkv)[:, -(kmax + 1):]  # (b, kmax + 1, P)
        out.target_calls += 1
        if kmax:
            ok = _accept(torch.stack(props, 1), t_next[:, :kmax], rule, tol, bias, sigma, gen) & (offs[:kmax] < kb[:, None])
            a = ok.to(torch.long).cumprod(1).sum(1)  # accepted prefix per row
        else:
            a = torch.zeros_like(n)
        buf[rows, n + a] = t_next[rows, a]  # replacement (or bonus) from the target
        out.proposed += int(kb.sum())
        out.accepted += int(a.sum())
        out.row_proposed[left] += kb
        out.row_accepted[left] += a
        out.emitted += int((a + 1).sum())
        n, first = n + a + 1, False
        done = n >= size
        if bool(done.any()):  # finished rows leave the batch
            full[left[done]] = buf[done]
            keep = ~done
            buf, left, n = buf[keep], left[keep], n[keep]
            if cache:
                tkv, dkv = tkv.select(keep), dkv.select(keep)
    out.values = _finish(full, n_ctx, horizon, mean, std)
    return out
