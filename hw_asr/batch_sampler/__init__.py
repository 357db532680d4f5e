"""Batch samplers registry: which utterances form each batch.

Every sampler has ``set_epoch(epoch, start_batch=0)`` so that a resumed run
continues with exactly the batches it would have seen.
"""
import torch
from torch.utils.data import Sampler

__all__ = ["RandomBatchSampler"]


class RandomBatchSampler(Sampler):
    """Fixed-size batches of a seeded random permutation (or in order with ``shuffle=False``)."""

    def __init__(self, dataset, batch_size, shuffle=True, drop_last=False, seed=0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n = len(dataset)
        if self.n == 0:
            raise ValueError("cannot sample batches from an empty dataset")
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self):
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.n))
        for b in range(self.start_batch, len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]
