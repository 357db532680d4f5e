"""Batch samplers registry: which utterances form each batch, and on which rank.

Every sampler has ``set_epoch(epoch, start_batch=0)`` so that a resumed run
continues with exactly the batches it would have seen, and shards across
``world_size`` ranks (default: the running torch.distributed group) so that every
rank gets the same number of batches and no utterance goes to two ranks.
"""

import math
import random
from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

from hw_asr.batch_sampler.common import check_batching, grid_length, world
from hw_asr.batch_sampler.stream import StreamBucketSampler
from hw_asr.datasets.base_dataset import dataset_parts

__all__ = ["RandomBatchSampler", "LengthBucketSampler", "StreamBucketSampler"]


def dataset_durations(dataset: Dataset) -> list[float]:
    """Durations (seconds) of every item, from the datasets' indexes (no audio is read)."""
    return [row["duration"] for part in dataset_parts(dataset) for row in part.index]


class _EpochSampler(Sampler):
    def __init__(self, seed: int, rank: int | None, world_size: int | None) -> None:
        self.seed = seed
        self.rank, self.world_size = world(rank, world_size)
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.rank_batches()[self.start_batch :]

    def __len__(self) -> int:
        return len(self.rank_batches())


class RandomBatchSampler(_EpochSampler):
    """Fixed-size batches of a seeded random permutation (in order with ``shuffle=False``).

    ``batch_size`` is per rank: a global batch is ``batch_size * world_size``
    consecutive items of the permutation and rank ``r`` takes the ``r``-th slice, so
    N ranks with batch ``b`` see the same global batches as one process with ``N * b``.
    In training (``drop_last``) an incomplete last global batch is dropped; in
    evaluation it is split as evenly as the ranks allow, so every item is seen once.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(seed, rank, world_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n = len(dataset)
        if self.n == 0:
            raise ValueError("cannot sample batches from an empty dataset")
        self.batch_size, self.shuffle = batch_size, shuffle
        self.drop_last = drop_last or (shuffle and self.world_size > 1)  # equal batch counts for training

    def rank_batches(self) -> list[list[int]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.n))
        size = self.batch_size * self.world_size
        batches = []
        for start in range(0, self.n, size):
            chunk = order[start : start + size]
            if len(chunk) < size and self.drop_last:
                break
            per_rank = -(-len(chunk) // self.world_size)
            mine = chunk[self.rank * per_rank : (self.rank + 1) * per_rank]
            if mine:
                batches.append(mine)
        return batches


class LengthBucketSampler(_EpochSampler):
    """Batches of utterances of similar duration.

    Utterances are sorted by duration and cut into ``num_buckets`` buckets; each
    epoch the order inside every bucket is shuffled (seed + epoch) and batches are
    filled along the buckets from short to long, either of ``batch_size`` utterances or, with
    ``max_batch_seconds``, as many as fit when every utterance is padded to the
    longest of its batch. The batch order is then shuffled and every rank takes
    every ``world_size``-th batch (the few batches beyond a multiple of
    ``world_size`` wait for another epoch).

    ``length_grid`` (a ratio such as 1.05) pads every batch to the next point of the
    geometric grid ``ratio ** k`` seconds instead of to its longest utterance (the
    collate function does it; ``max_batch_seconds`` counts the padded length), so that an
    epoch has a few dozen input shapes instead of one per batch: static shapes for
    ``cudnn.benchmark``, CUDA graphs and compiled steps, for at most ``ratio - 1`` more
    padding per batch.

    ``sorta_grad_epochs`` (SortaGrad, Amodei et al. 2016, "Deep Speech 2", arXiv:1512.02595, section 3.1):
    in the first that many passes over the data the batches come from short to long instead of in a shuffled
    order (utterances within a bucket are still shuffled), so that the model meets the easy, short
    alignments first. 0 (the default) shuffles from the first pass.
    """

    def __init__(
        self,
        dataset: Dataset,
        max_batch_seconds: float | None = None,
        batch_size: int | None = None,
        num_buckets: int = 60,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        length_grid: float | None = None,
        sorta_grad_epochs: int = 0,
    ) -> None:
        super().__init__(seed, rank, world_size)
        check_batching(max_batch_seconds, batch_size, length_grid, sorta_grad_epochs)
        self.sorta_grad_epochs = sorta_grad_epochs
        self.length_grid = length_grid
        self.durations = dataset_durations(dataset)
        if not self.durations:
            raise ValueError("cannot sample batches from an empty dataset")
        if max_batch_seconds is not None and self.padded(max(self.durations)) > max_batch_seconds:
            raise ValueError(
                f"the longest utterance ({max(self.durations):.1f} s, padded to "
                f"{self.padded(max(self.durations)):.1f} s) does not fit max_batch_seconds="
                f"{max_batch_seconds}; raise it or set the dataset's max_audio_length"
            )
        self.max_batch_seconds, self.batch_size = max_batch_seconds, batch_size
        self.num_buckets, self.shuffle = max(1, num_buckets), shuffle
        by_length = sorted(range(len(self.durations)), key=lambda i: (self.durations[i], i))
        n = len(by_length)
        edges = [round(k * n / self.num_buckets) for k in range(self.num_buckets + 1)]
        self.buckets = [by_length[a:b] for a, b in zip(edges, edges[1:]) if b > a]

    def padded(self, seconds: float) -> float:
        """The length a batch whose longest utterance lasts ``seconds`` is padded to."""
        return grid_length(seconds, self.length_grid) if self.length_grid else seconds

    def _fill(self, indices: Iterable[int]) -> list[list[int]]:
        batches, batch, longest = [], [], 0.0
        for i in indices:
            d = self.durations[i]
            if self.batch_size is not None:
                full = len(batch) == self.batch_size
            else:
                full = batch and (len(batch) + 1) * self.padded(max(longest, d)) > self.max_batch_seconds
            if full:
                batches.append(batch)
                batch, longest = [], 0.0
            batch.append(i)
            longest = max(longest, d)
        if batch:
            batches.append(batch)
        return batches

    def all_batches(self) -> list[list[int]]:
        """Every batch of the epoch, before sharding."""
        rng = random.Random(self.seed + self.epoch)
        order = []
        for bucket in self.buckets:  # shortest bucket first; a batch may span two neighbours
            bucket = list(bucket)
            if self.shuffle:
                rng.shuffle(bucket)
            order += bucket
        batches = self._fill(order)
        if self.shuffle and self.epoch >= self.sorta_grad_epochs:
            rng.shuffle(batches)
        return batches

    def rank_batches(self) -> list[list[int]]:
        batches = self.all_batches()
        usable = len(batches) - len(batches) % self.world_size if self.world_size > 1 else len(batches)
        return batches[self.rank : usable : self.world_size]
