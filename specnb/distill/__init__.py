"""Drafts for a pretrained target, trained here on CPU and shipped small.

The drafts themselves (a few of the target's layers on its frozen embedding and an FR-Spec subset
head, stored as their own layers only) are ``specnb.shallow``, re-exported here.

- ``train``: ``distill``, resumable distillation of several drafts that share one teacher pass per
  batch (KL to the target's distribution over the head's tokens), checkpointed to disk.
- ``narrow``: ``width_pruned_draft``, a shallow draft whose layers keep fewer KV heads and FFN
  neurons (Minitron), for seed 004's depth-vs-width comparison at equal parameters.
- ``features``: the target's last hidden states over a token stream, extracted once (resumable).
- ``eagle``: resumable training of an EAGLE draft (``specnb.eagle``) on those features, optionally
  over several drafting steps per position (EAGLE-3's training-time test).
- ``onpolicy``: the target's own greedy continuations of documented stdlib functions (on-policy text,
  kept per batch).
- ``cli``: ``python -m specnb.distill train|status|export|eagle``.
"""

from ..shallow import DraftSpec, SubsetHead, frequent_tokens, load_draft, load_drafts, own_state, save_draft, shallow_draft
from .eagle import EagleSettings, train_eagle
from .features import extract_features, load_features
from .narrow import width_pruned_draft
from .train import DistillSettings, distill

__all__ = ["SubsetHead", "frequent_tokens", "DraftSpec", "shallow_draft", "own_state", "save_draft", "load_draft",
           "load_drafts", "DistillSettings", "distill", "EagleSettings", "train_eagle", "extract_features", "load_features",
           "width_pruned_draft"]
