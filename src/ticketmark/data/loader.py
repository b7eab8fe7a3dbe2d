"""Batches cut straight from in-memory tensors, seeded per epoch, shardable across ranks."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ticketmark.data.augment import random_crop_flip
from ticketmark.data.registry import Split


class TensorLoader:
    """Iterate over ``(x, y)`` batches of a split.

    Under DDP each rank takes every ``world``-th index of the same seeded permutation, so
    ranks see disjoint shards whose union is the epoch, like ``DistributedSampler``.
    """

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 augment: bool = False, rank: int = 0, world: int = 1, drop_last: bool = False):
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.seed, self.augment, self.rank, self.world = seed, augment, rank, world
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.split)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            idx = torch.randperm(n, generator=gen)
        else:
            idx = torch.arange(n)
        if self.world > 1:
            per_rank = n // self.world
            idx = idx[self.rank :: self.world][:per_rank]
        return idx

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        gen = torch.Generator().manual_seed(self.seed * 7_919 + self.epoch + 1)
        for start in range(0, len(idx), self.batch_size):
            batch = idx[start : start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                break
            x = self.split.x[batch]
            if self.augment:
                x = random_crop_flip(x, padding=4, generator=gen)
            yield x, self.split.y[batch]
