"""Deterministic, resumable batch order.

The order of epoch ``e`` is a pure function of ``(seed, epoch)``, and the random numbers for one step (augmentation,
noise) come from a generator derived from ``(seed, epoch, step)``. A run resumed at any step therefore sees exactly
the batches an uninterrupted run sees, with no sampler state to save.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

__all__ = ["derive_seed", "make_generator", "epoch_permutation", "steps_per_epoch", "epoch_batches", "shard"]


def derive_seed(seed: int, *keys: int) -> int:
    """Mix ``seed`` and integer ``keys`` into one well-spread 63-bit seed (a pure function of its arguments)."""
    values = (seed, *keys)
    if any(not isinstance(v, (int, np.integer)) or v < 0 for v in values):
        raise ValueError(f"seed and keys must be non-negative integers, got {values}")
    words = np.random.SeedSequence([int(v) for v in values]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def make_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a torch.Generator seeded from ``(seed, *keys)``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *keys))
    return generator


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``n`` examples for ``epoch`` (int64 tensor)."""
    return torch.randperm(n, generator=make_generator(seed, epoch))


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of batches in one epoch of ``n`` examples."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    start: int = 0,
) -> Iterator[torch.Tensor]:
    """Yield the index tensors of epoch ``epoch``'s batches, beginning at batch number ``start``."""
    order = epoch_permutation(n, seed, epoch) if shuffle else torch.arange(n)
    for step in range(start, steps_per_epoch(n, batch_size, drop_last)):
        yield order[step * batch_size : (step + 1) * batch_size]


def shard(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (the slices of all ranks concatenate to the batch).

    Slices differ in size by at most one when the batch does not divide evenly; equal slices are needed for a
    DistributedDataParallel step to equal a single-process step on the global batch, so prefer batch sizes
    divisible by the world size (and ``drop_last``).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    return torch.tensor_split(batch, world_size)[rank]
