"""Training data: ``WindowStream``, a stateless, resumable sampler of token windows.

The batch of step ``s`` depends only on ``(seed, s)``, so a run resumed from a checkpoint sees
exactly the data it would have seen without stopping.
"""

from __future__ import annotations

import numpy as np
import torch


class WindowStream:
    """Stateless, resumable sampler of training windows: the batch of step ``s`` depends only on (seed, s).

    Each epoch shuffles the non-overlapping ``seq_len`` chunks of the train stream (with a random
    shift per epoch), so every token is seen about once per epoch.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int):
        """Keep the token stream and derive the number of windows per epoch."""
        if len(tokens) < 2 * seq_len + 2:
            raise ValueError(f"train split has {len(tokens)} tokens, too few for windows of {seq_len}")
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = (len(tokens) - 1 - seq_len) // seq_len
        self._epochs: dict[int, tuple[int, np.ndarray]] = {}

    def epoch_order(self, epoch: int) -> tuple[int, np.ndarray]:
        """Shift and chunk permutation of one epoch (the latest one is cached)."""
        if epoch not in self._epochs:
            rng = np.random.default_rng([self.seed, epoch])
            self._epochs = {epoch: (int(rng.integers(0, self.seq_len)), rng.permutation(self.per_epoch))}
        return self._epochs[epoch]

    def position(self, step: int) -> dict:
        """Data-RNG state at the start of ``step``: seed, epoch and cursor within the epoch."""
        index = step * self.batch_size
        return {"seed": self.seed, "epoch": index // self.per_epoch, "cursor": index % self.per_epoch}

    def batch(self, step: int) -> torch.Tensor:
        """The ``(batch_size, seq_len + 1)`` int64 windows of ``step``."""
        rows = []
        for i in range(self.batch_size):
            index = step * self.batch_size + i
            shift, perm = self.epoch_order(index // self.per_epoch)
            start = shift + int(perm[index % self.per_epoch]) * self.seq_len
            rows.append(np.asarray(self.tokens[start:start + self.seq_len + 1], dtype=np.int64))
        return torch.from_numpy(np.stack(rows))
