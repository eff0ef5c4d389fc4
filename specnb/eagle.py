"""EAGLE drafts: one decoder layer that drafts from the target's own last hidden states.

Li, Wei, Zhang & Zhang 2024, "EAGLE: Speculative Sampling Requires Rethinking Feature Uncertainty"
(arXiv:2401.15077). The draft reads, at position p, the target's feature f_p (its last hidden state
after the final norm: what its head reads) and the embedding of the next token x_{p+1}, and
predicts f_{p+1}; the target's head (here FR-Spec's subset of it, ``shallow.SubsetHead``) turns the
prediction into a token. Drafting k tokens feeds each predicted feature back in. A shallow draft
must rebuild the context from tokens alone; this one starts from the target's summary of it.

- ``EagleDraft(target, vocab_ids, init_layer)``: the model: ``fc`` (2H -> H) on
  [embedding, feature], one decoder layer of the target's family (initialised as a copy of the
  target's layer ``init_layer``), a final norm, the target's embedding and head shared and frozen.
  ``forward(input_ids, features, past_key_values)`` is a causal LM's forward (features default to
  zeros, so ``timing.step_latency`` times its decode step like any draft's); ``cast(dtype)`` puts
  its own weights in another precision (bf16: a cheaper draft, the same output).
- ``EagleSource``: the draft source the speculative loop calls (``prefill`` / ``propose`` /
  ``accept``, as in ``generate.drafts``). A forward hook on the target's final norm keeps the
  features of every target forward: the prefill's rows, then each verification's accepted rows;
  the target itself and the loop are untouched, so greedy output stays the target's and sampling
  stays exact (the draft's q is an ordinary distribution). ``EagleDraft.as_source`` builds one;
  ``speculative_generate`` calls it when given an ``EagleDraft``.
- ``eagle_loss``: EAGLE's training loss, Smooth-L1 on the feature plus ``w_cls`` times the
  cross-entropy to the target's distribution over the head's tokens (paper Sec. 4: w_cls = 0.1),
  optionally over several drafting steps that read the draft's own predictions
  (``unrolled_features``: EAGLE-3's training-time test, one block attention mask per step).
- ``save_eagle`` / ``load_eagle``: own weights (fp16) + token subset + training record, one file
  (``shallow.read_metadata`` reads it, kind "eagle"); ``load_eagles(target, folder)``: all of a folder's.
"""

from __future__ import annotations

import copy
import json
import weakref
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import DynamicCache

from .atomic import atomic_path
from .generate.forward import cache_argument, crop
from .generate.sampling import logits_to_probs, sample
from .shallow import DraftSpec, SubsetHead, read_metadata

__all__ = ["EagleDraft", "EagleSource", "eagle_loss", "unrolled_features", "save_eagle", "load_eagle", "load_eagles"]

SHARED = ("embed_tokens.", "lm_head.")


class EagleDraft(nn.Module):
    """fc([e(x_{p+1}), f_p]) -> one decoder layer -> norm: the predicted f_{p+1}, (B, T, H)."""

    def __init__(self, target, vocab_ids: torch.Tensor | None = None, init_layer: int = -1):
        super().__init__()
        if not hasattr(getattr(target, "model", None), "layers") or not hasattr(target, "lm_head"):
            raise ValueError(f"EagleDraft needs a Llama-style causal LM (model.layers, lm_head); got {type(target).__name__}")
        total = len(target.model.layers)
        if not -total <= init_layer < total:
            raise ValueError(f"init_layer must index one of the target's {total} layers; got {init_layer}")
        self.init_layer = init_layer % total
        config = copy.deepcopy(target.config)
        config.num_hidden_layers = 1
        if getattr(config, "layer_types", None):
            config.layer_types = [config.layer_types[self.init_layer]]
        self.config = config
        hidden = config.hidden_size
        with torch.device("meta"):
            body = type(target.model)(config)
        body.layers = nn.ModuleList([copy.deepcopy(target.model.layers[self.init_layer])])
        body.layers[0].self_attn.layer_idx = 0
        body.norm = copy.deepcopy(target.model.norm)
        body.rotary_emb = copy.deepcopy(target.model.rotary_emb)
        body.embed_tokens = target.model.embed_tokens  # shared, frozen; the draft embeds x_{p+1} itself
        self.body = body
        dtype = target.model.embed_tokens.weight.dtype
        self.fc = nn.Linear(2 * hidden, hidden, bias=False, device=target.device, dtype=dtype)
        with torch.no_grad():  # start as "the feature, unchanged": [0 | I]
            self.fc.weight.zero_()
            self.fc.weight[:, hidden:].copy_(torch.eye(hidden))
        self.lm_head = target.lm_head if vocab_ids is None else SubsetHead(target.lm_head.weight, vocab_ids)
        for p in self.parameters():
            p.requires_grad_(True)
        for p in list(body.embed_tokens.parameters()) + list(self.lm_head.parameters()):
            p.requires_grad_(False)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    @property
    def embed_tokens(self) -> nn.Module:
        return self.body.embed_tokens

    def cast(self, dtype: torch.dtype) -> "EagleDraft":
        """This draft's own weights (fc, layer, norm, and a ``SubsetHead``'s rows) in ``dtype``; the
        shared embedding and a shared full head stay the target's. A draft's precision never changes
        the output (the target verifies every token); in bf16 its head reads half the bytes (a CPU
        with AVX512-BF16 runs the 16,384-row head ~5x faster here)."""
        self.fc.to(dtype)
        self.body.layers.to(dtype)
        self.body.norm.to(dtype)
        if isinstance(self.lm_head, SubsetHead):
            self.lm_head.weight = self.lm_head.weight.to(dtype)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.fc.weight.dtype

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head's logits (..., V) of predicted features, in the head's dtype."""
        weight = self.lm_head.weight
        return self.lm_head(hidden.to(weight.dtype))

    def features(self, input_ids: torch.Tensor, features: torch.Tensor, past_key_values=None) -> torch.Tensor:
        """Predicted next features (B, T, H) from ``features`` f_p (B, T, H) and ``input_ids`` x_{p+1} (B, T)."""
        x = self.fc(torch.cat([self.body.embed_tokens(input_ids).to(features.dtype), features], dim=-1))
        kwargs = {cache_argument(type(self.body)): past_key_values} if past_key_values is not None else {}
        return self.body(inputs_embeds=x, use_cache=past_key_values is not None, **kwargs).last_hidden_state

    def forward(self, input_ids: torch.Tensor, features: torch.Tensor | None = None, past_key_values=None,
                use_cache: bool = True, logits_to_keep: int = 0, **_) -> SimpleNamespace:
        """A causal LM's forward: ``.logits`` (B, T or logits_to_keep, V). Without ``features``
        (zeros) it costs what a decode step costs; its tokens are meaningless."""
        if features is None:
            features = torch.zeros(*input_ids.shape, self.config.hidden_size, device=self.device, dtype=self.dtype)
        hidden = self.features(input_ids, features.to(self.dtype), past_key_values if use_cache else None)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return SimpleNamespace(logits=self.logits(hidden))

    def as_source(self, target, *, do_sample: bool = False, temperature: float = 1.0,
                  generator: torch.Generator | None = None) -> "EagleSource":
        return EagleSource(self, target, do_sample=do_sample, temperature=temperature, generator=generator)


class EagleSource:
    """Draft tokens with an ``EagleDraft`` from the target's features, kept by a hook on the
    target's final norm (removed when the source is garbage-collected, or by ``close()``).

    Bookkeeping: before each proposal the draft is fed every (target feature f_p, token x_{p+1})
    pair it lacks: the rows of the forwards since its last proposal, the last of them trimmed to the
    accepted tokens by ``accept``. They end at position len(seq) - 2 (the last token of ``seq`` has
    not been through the target yet), so they start at len(seq) - 1 - m for m rows. The draft's cache
    is cropped there first: entries written from its own predicted features are rewritten from the
    target's."""

    name = "eagle"

    def __init__(self, draft: EagleDraft, target, *, do_sample: bool = False, temperature: float = 1.0,
                 generator: torch.Generator | None = None):
        norm = getattr(getattr(target, "model", None), "norm", None)
        if not isinstance(norm, nn.Module):
            raise ValueError(f"EagleSource reads the target's final norm (target.model.norm); {type(target).__name__} has none")
        if draft.config.hidden_size != target.config.hidden_size:
            raise ValueError(f"this EAGLE draft has hidden size {draft.config.hidden_size} and the target "
                             f"{target.config.hidden_size}; load the draft trained for this target")
        self.draft, self.do_sample, self.temperature, self.generator = draft, do_sample, temperature, generator
        self.blocks: list[torch.Tensor] = []  # (r, H) feature rows of the target forwards not yet fed
        self.cache = DynamicCache(config=draft.config)
        self.calls = 0
        blocks = self.blocks

        def keep(module, args, output):  # the hook holds the list, not the source
            blocks.append(output[0].detach())

        self._handle = norm.register_forward_hook(keep)
        self._finalizer = weakref.finalize(self, self._handle.remove)

    def close(self) -> None:
        self._finalizer()

    def prefill(self, prompt: torch.Tensor) -> None:
        if not self.blocks or self.blocks[-1].shape[0] != prompt.shape[1]:
            raise RuntimeError("EagleSource.prefill must follow the target's prefill of the same prompt (no features seen)")
        del self.blocks[:-1]
        self.cache = DynamicCache(config=self.draft.config)

    def accept(self, n: int, length: int) -> None:
        self.blocks[-1] = self.blocks[-1][: n + 1]  # the verification's rows up to the last accepted token

    def _next(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.draft.logits(hidden).float()  # (V,)
        if self.do_sample:
            q = logits_to_probs(logits, self.temperature)
            return sample(q, self.generator), q
        return logits.argmax(-1), None

    @torch.inference_mode()
    def propose(self, seq: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = self.draft.device
        feats = torch.cat(self.blocks).to(device=device, dtype=self.draft.dtype)  # (m, H)
        self.blocks.clear()
        start = len(seq) - 1 - feats.shape[0]
        if start < 0 or start > self.cache.get_seq_length():
            raise RuntimeError(f"EagleSource lost track of the target's features (first fed position {start}, "
                               f"draft cache {self.cache.get_seq_length()}); use a new source per generation")
        crop(self.cache, start)
        ids = torch.tensor([seq[start + 1 :]], device=device)  # (1, m): x_{p+1} for every fed f_p
        hidden = self.draft.features(ids, feats[None], self.cache)[0, -1]  # (H,) predicted feature of len(seq) - 1
        tokens, probs = [], []
        for i in range(k):
            tok, q = self._next(hidden)
            tokens.append(tok)
            probs.append(q)
            if i < k - 1:
                hidden = self.draft.features(tok.view(1, 1), hidden.view(1, 1, -1), self.cache)[0, -1]
        self.calls += k
        return torch.stack(tokens), (torch.stack(probs) if self.do_sample else None)


def unrolled_features(draft: EagleDraft, features: torch.Tensor, ids: torch.Tensor, steps: int = 1, *,
                      noise: float = 0.0, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The draft's predicted features over teacher-forced windows for ``steps`` drafting steps, each
    as the speculative loop meets it (EAGLE-3's training-time test, Li et al. 2025, arXiv:2503.01840,
    Sec. 3.2; HASS, Zhang et al. 2024, arXiv:2408.15766). ``features`` (B, T, H) are the target's,
    ``ids`` (B, T). Entry q reads x_{q+1} and a feature of position q; out[j][:, q] (B, L=T-1, H)
    predicts f_{q+1}:
    - step 1 (j = 0) reads the target's f_q (+ U(-noise, noise)), causally: teacher forcing;
    - step j + 1 reads step j's prediction of f_q and attends to the target-fed entries up to
      q - j and to its own chain (entry q - j + i of step i + 1, i = 1..j), as the draft does after
      its first j tokens were accepted. Rows q < j have no such context and are not meaningful.
    Tokens are the true ones: a step only counts when the draft's earlier tokens were accepted."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    b, t, _ = features.shape
    n = t - 1
    inputs = features[:, :-1]
    if noise:
        inputs = inputs + (torch.rand(inputs.shape, generator=generator, device=inputs.device) * 2 - 1) * noise
    emb = draft.body.embed_tokens(ids[:, 1:])  # (B, L, H): x_{q+1}
    q = torch.arange(n, device=features.device)
    pos = q.expand(b, n)
    cache = DynamicCache(config=draft.config)
    kwargs = {cache_argument(type(draft.body)): cache}
    out, feed = [], inputs.to(draft.dtype)
    for j in range(steps):
        keys = [q[None, :] <= q[:, None] - j] + [q[None, :] == q[:, None] - j + i for i in range(1, j + 1)]
        mask = torch.cat(keys, dim=1)[None, None].expand(b, 1, n, (j + 1) * n)  # (B, 1, L, (j+1) L), True: attend
        x = draft.fc(torch.cat([emb.to(feed.dtype), feed], dim=-1))
        h = draft.body(inputs_embeds=x, position_ids=pos, attention_mask=mask, use_cache=True, **kwargs).last_hidden_state
        out.append(h)
        feed = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)  # entry q reads the prediction made at q - 1
    return out


def eagle_loss(draft: EagleDraft, features: torch.Tensor, ids: torch.Tensor, *, w_cls: float = 0.1, noise: float = 0.0,
               generator: torch.Generator | None = None, steps: int = 1) -> tuple[torch.Tensor, dict]:
    """EAGLE's loss on teacher-forced windows: ``features`` (B, T, H) the target's, ``ids`` (B, T).
    Position p predicts f_{p+1} from (f_p + U(-noise, noise), x_{p+1}); with ``steps`` > 1 the
    draft's own predictions feed the later steps (``unrolled_features``) and the loss is the mean
    over steps, each on the rows that have its context. Returns (loss, metrics): Smooth-L1 to
    f_{p+1}, cross-entropy to softmax(head(f_{p+1})) over the head's tokens, and the top-1 agreement
    of the two heads' argmax (``top1``: step 1; ``top1_s{j}``: step j)."""
    f = features.float()
    head = draft.lm_head
    subset = head.subset_logits if isinstance(head, SubsetHead) else head
    with torch.no_grad():
        t_logits = subset(f[:, 1:])
        p_t = t_logits.softmax(-1)
        t_top = t_logits.argmax(-1)
    preds = unrolled_features(draft, features, ids, steps, noise=noise, generator=generator)
    loss, metrics = 0.0, {}
    for j, pred in enumerate(preds):
        pred = pred[:, j:].float()  # rows with step j + 1's context
        reg = F.smooth_l1_loss(pred, f[:, 1 + j :])
        s_logits = subset(pred).float()
        cls = -(p_t[:, j:] * s_logits.log_softmax(-1)).sum(-1).mean()
        top1 = (s_logits.argmax(-1) == t_top[:, j:]).float().mean().item()
        loss = loss + (reg + w_cls * cls) / steps
        if j == 0:
            metrics |= {"reg": reg.detach().item(), "cls": cls.detach().item(), "top1": top1}
        else:
            metrics[f"top1_s{j + 1}"] = top1
    return loss, metrics


def own_state(draft: EagleDraft) -> dict[str, torch.Tensor]:
    """The draft's weights that are not the target's: fc, its layer, its norm."""
    return {k: v for k, v in draft.state_dict().items() if not any(k.startswith(s) or f".{s}" in k for s in SHARED)}


def save_eagle(draft: EagleDraft, path: str | Path, *, name: str, target_name: str, record: dict | None = None) -> Path:
    """One safetensors file: own weights (fp16), the head's token subset, and metadata (kind "eagle")."""
    path = Path(path)
    tensors = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in own_state(draft).items()}
    if isinstance(draft.lm_head, SubsetHead):
        tensors["vocab_ids"] = draft.lm_head.ids.cpu()
    spec = DraftSpec(name, (draft.init_layer,), "eagle: fc + one layer from the target's")
    meta = {"kind": "eagle", "spec": json.dumps(asdict(spec)), "target": target_name, "record": json.dumps(record or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_eagle(target, path: str | Path, *, full_head: bool = False, dtype: torch.dtype | None = None) -> EagleDraft:
    """Rebuild a saved EAGLE draft on ``target`` (its embedding and head are the target's), its own
    weights in ``dtype`` (default: the target's; see ``EagleDraft.cast``)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no EAGLE draft at {path}; train one with `python -m specnb.distill eagle`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("kind") != "eagle":
        raise ValueError(f"{path} is not an EAGLE draft (load it with specnb.shallow.load_draft)")
    spec = json.loads(meta["spec"])
    ids = tensors.pop("vocab_ids", None)
    draft = EagleDraft(target, None if full_head else ids, init_layer=spec["layers"][0])
    base = next(target.parameters()).dtype
    missing, unexpected = draft.load_state_dict({k: v.to(base) for k, v in tensors.items()}, strict=False)
    if unexpected or any(not any(k.startswith(s) or f".{s}" in k for s in SHARED) for k in missing):
        raise ValueError(f"{path} does not fit this target (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                         f"it was trained for {meta.get('target')!r}")
    return (draft.cast(dtype) if dtype is not None else draft).eval()


def load_eagles(target, folder: str | Path, **kwargs) -> dict[str, EagleDraft]:
    """name -> EAGLE draft for every EAGLE ``*.safetensors`` in ``folder``, sorted by name."""
    paths = sorted(Path(folder).glob("*.safetensors"))
    return {p.stem: load_eagle(target, p, **kwargs) for p in paths if read_metadata(p)["kind"] == "eagle"}
