"""Drafts for a pretrained target, trained here on CPU and shipped small.

The drafts themselves (a few of the target's layers on its frozen embedding and an FR-Spec subset
head, stored as their own layers only) are ``specnb.shallow``, re-exported here.

- ``train``: ``distill``, resumable distillation of several drafts that share one teacher pass per
  batch (KL to the target's distribution over the head's tokens), checkpointed to disk.
- ``cli``: ``python -m specnb.distill train|status|export``.
"""

from ..shallow import DraftSpec, SubsetHead, frequent_tokens, load_draft, load_drafts, own_state, save_draft, shallow_draft
from .train import DistillSettings, distill

__all__ = ["SubsetHead", "frequent_tokens", "DraftSpec", "shallow_draft", "own_state", "save_draft", "load_draft",
           "load_drafts", "DistillSettings", "distill"]
