"""Duration-bucketed batches from a stream of shards (``SharDataset``), for one machine or many.

Which process reads what:
- the shards are dealt to the ranks once for the whole run, in a seeded order: rank ``r`` of ``W`` reads
  every ``W``-th shard, so no utterance goes to two ranks and no rank reads another's files;
- inside a rank, the shards are dealt to ``K`` streams, one per data-loader worker (stream ``s`` reads
  every ``K``-th of the rank's shards), and batch ``k`` of an epoch comes from stream ``k % K``.

What an epoch is: every rank gives the same number of batches, ``N``, planned from the index alone
(work in the number of shards): the rank with the least audio could fill at least
``seconds / (max_batch_seconds * fill)`` batches, so ``N`` is that, for the poorest rank. A worker reads
its shards in a new seeded order each data epoch; if they run out before its share of ``N`` it starts
them again in another order, and what is left in its buffer when its share is done waits for the next
epoch's reshuffle.

How batches form: utterances gather in a buffer of ``buffer_size``; a full buffer is sorted by duration and
cut into batches in order, each as long as the next utterance fits ``max_batch_seconds`` of padded audio
(padded to the longest, or to its ``length_grid`` point; or ``batch_size`` utterances), and its batches
leave in a shuffled order. Only the last batch of a buffer may be short, so batches stay nearly full and
padding stays small. The waiting utterances keep their encoded bytes; audio is decoded only for batches
that are emitted.

Exact resume: everything above is a function of the seed, the data epoch, the rank and the worker, so
``set_epoch(epoch, start_batch)`` makes each worker run its stream past the batches already trained on
(reading, not decoding) and go on from there.
"""

import itertools
import logging
import random
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hw_asr.batch_sampler.common import check_batching, grid_length, world
from hw_asr.datasets.shar_dataset import SharDataset, ShardError

logger = logging.getLogger(__name__)


class StreamBucketSampler(IterableDataset):
    """Batches of a streamed dataset (``SharDataset``); see the module's docstring.

    ``max_batch_seconds`` (padded audio per batch) or ``batch_size`` (utterances); ``length_grid`` as for
    ``LengthBucketSampler``; ``buffer_size`` (utterances sorted together, per worker); ``fill`` (the share
    of ``max_batch_seconds`` a batch is planned to hold); ``shuffle`` (shard and batch order per epoch; off:
    the export order, every epoch the same).

    ``sorta_grad_epochs`` (SortaGrad, Amodei et al. 2016, "Deep Speech 2", arXiv:1512.02595, section 3.1): in
    the first that many epochs each buffer's batches leave from short to long instead of shuffled. A stream
    has no global order of length, so the order is by length within each buffer (``buffer_size`` utterances
    of one worker): the pass goes short-to-long and starts again at every buffer. The shards' order is still
    shuffled. 0 (the default) shuffles from the first epoch.
    """

    streams = True

    def __init__(
        self,
        dataset: SharDataset,
        max_batch_seconds: float | None = None,
        batch_size: int | None = None,
        length_grid: float | None = None,
        buffer_size: int = 1000,
        fill: float = 0.9,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        sorta_grad_epochs: int = 0,
    ) -> None:
        if not getattr(dataset, "streaming", False):
            raise ValueError(
                f"StreamBucketSampler batches a streamed dataset such as SharDataset, not {type(dataset).__name__}; "
                f"use LengthBucketSampler for it"
            )
        check_batching(max_batch_seconds, batch_size, length_grid, sorta_grad_epochs)
        if not 0 < fill <= 1:
            raise ValueError(f"fill must be in (0, 1], got {fill!r}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self.sorta_grad_epochs = sorta_grad_epochs
        self.dataset = dataset
        self.max_batch_seconds, self.batch_size = max_batch_seconds, batch_size
        self.length_grid = length_grid
        self.buffer_size, self.fill, self.shuffle, self.seed = buffer_size, fill, shuffle, seed
        self.rank, self.world_size = world(rank, world_size)
        self.epoch, self.start_batch = 0, 0
        self.num_workers = 0  # the loader's, set by the builder: it decides which worker reads what
        if max_batch_seconds is not None:
            longest = max(s.max_seconds for s in dataset.shards)
            limit = dataset.max_audio_length or longest
            if self.padded(min(longest, limit)) > max_batch_seconds:
                raise ValueError(
                    f"the longest utterance of {dataset.describe()} ({longest:.1f} s, padded to "
                    f"{self.padded(min(longest, limit)):.1f} s) does not fit max_batch_seconds={max_batch_seconds}; "
                    f"raise it or set the dataset's max_audio_length"
                )
        if len(dataset.shards) < self.world_size:
            raise ValueError(
                f"{dataset.describe()} has {len(dataset.shards)} shard(s), fewer than the {self.world_size} "
                f"processes: every process reads shards of its own; export with a smaller --shard-size"
            )
        # the shards' order that deals them to the ranks, and the batches per epoch: fixed for the run
        self.shard_order = list(range(len(dataset.shards)))
        random.Random(f"shards-{self.seed}").shuffle(self.shard_order)
        self.planned = self._plan()

    # ---- the plan (every rank computes the same, from the index) ------------------------
    def padded(self, seconds: float) -> float:
        return grid_length(seconds, self.length_grid) if self.length_grid else seconds

    def rank_shards(self, rank: int) -> list[int]:
        """The shards of ``rank`` for the whole run (indices into the dataset's shards)."""
        return self.shard_order[rank :: self.world_size]

    def _plan(self) -> int:
        """``N``: the batches every rank gives per data epoch."""
        limit = self.dataset.max_audio_length
        counts = []
        for r in range(self.world_size):
            mine = [self.dataset.shards[i] for i in self.rank_shards(r)]
            if self.batch_size is not None:
                counts.append(sum(s.utterances for s in mine) // self.batch_size)
            else:  # with a length filter: what it leaves, at most
                seconds = sum(s.seconds if limit is None else min(s.seconds, s.utterances * limit) for s in mine)
                counts.append(int(seconds // (self.max_batch_seconds * self.fill)))
        return min(counts)

    def __len__(self) -> int:
        return self.planned

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def state_dict(self) -> dict[str, Any]:
        """What the batches depend on besides the epoch and position; a resume checks it."""
        return {
            "seed": self.seed,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "shards": [s.name for s in self.dataset.shards],
        }

    def check_resume(self, saved: Mapping[str, Any]) -> None:
        """Warn when a resumed run's stream cannot give the batches the interrupted run would have seen."""
        now = self.state_dict()
        changed = [k for k in now if k in saved and saved[k] != now[k]]
        if changed:
            logger.warning(
                "the training stream differs from the checkpoint's (%s): the run resumes at the same place in "
                "the epoch, but with other batches than an uninterrupted run",
                ", ".join(
                    f"{k}: {saved[k] if k != 'shards' else len(saved[k])} -> {now[k] if k != 'shards' else len(now[k])}"
                    for k in changed
                ),
            )

    @staticmethod
    def worker_share(total: int, worker: int, workers: int) -> int:
        """How many of the first ``total`` batches of a rank come from ``worker`` (the loader takes batch
        ``k`` from worker ``k % workers``)."""
        return total // workers + (worker < total % workers)

    # ---- the stream -------------------------------------------------------------------
    def __iter__(self) -> Iterator[list]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # Global batch k of the epoch comes from stream k % workers. A resumed loader takes its j-th batch
        # (global batch start + j) from worker j % workers, so worker w plays stream (w + start) % workers.
        stream = (worker + self.start_batch) % workers
        total = len(self)
        quota = self.worker_share(total, stream, workers)
        skip = self.worker_share(self.start_batch, stream, workers)
        mine = self.rank_shards(self.rank)[stream::workers]
        if quota <= skip:
            return
        if not mine:
            raise ShardError(
                f"{self.dataset.describe()}: loader worker {stream} of {workers} on rank {self.rank} has no shard: "
                f"{len(self.dataset.shards)} shards for {self.world_size} process(es) x {workers} worker(s); "
                f"lower num_workers or export with a smaller --shard-size"
            )
        rng = random.Random(f"stream-{self.seed}-{self.epoch}-{self.rank}-{stream}")
        failures = []  # files left out since the last item, carried by the next one (load_failures)
        made = 0
        for _ in itertools.count():  # passes over this worker's shards until its share is made
            order = list(mine)
            if self.shuffle:
                rng.shuffle(order)
            made_in_pass = 0
            for entries in self._batches(order, failures, rng):
                made += 1
                made_in_pass += 1
                if made > skip:
                    items = self.dataset.load_entries(entries, failures)
                    if any("load_error" not in it for it in items) or not self.dataset.replace_failed_files:
                        yield items
                    else:  # every file of the batch failed: the batch is made again from the next ones
                        made -= 1
                        continue
                if made >= quota:
                    return
            if made_in_pass == 0:
                raise ShardError(
                    f"{self.dataset.describe()}: loader worker {stream} on rank {self.rank} read its "
                    f"{len(order)} shard(s) and found no usable utterance"
                )

    def _batches(self, order: Iterable[int], failures: list[str], rng: random.Random) -> Iterator[list]:
        """Batches (lists of entries) from the shards ``order`` (indices), a sorted buffer at a time."""
        buffer = []
        for index in order:
            shard = self.dataset.shards[index]
            skipped = []
            try:
                for entry in self.dataset.entries(shard, skipped):
                    buffer.append(entry)
                    if len(buffer) >= self.buffer_size:
                        yield from self._cut(buffer, rng)
                        buffer = []
            except ShardError as e:
                # the rest of the shard is lost; training goes on with the next one, the loss counted
                logger.warning("%s: skipped the rest of the shard: %s", self.dataset.describe(), e)
                failures.append(f"{shard.name} (truncated or corrupt: the rest of the shard skipped)")
            for where, reason in skipped:
                logger.warning("%s: skipped %s: %s", self.dataset.describe(), where, reason)
        if buffer:
            yield from self._cut(buffer, rng)

    def _cut(self, entries: list, rng: random.Random) -> list[list]:
        """The buffer sorted by duration, cut into batches in order, the batches in a shuffled order (from short
        to long in a SortaGrad epoch)."""
        batches, batch, longest = [], [], 0.0
        for entry in sorted(entries, key=lambda e: (e.duration, e.id)):
            if batch and self._full(batch, longest, entry.duration):
                batches.append(batch)
                batch, longest = [], 0.0
            batch.append(entry)
            longest = max(longest, entry.duration)
        if batch:
            batches.append(batch)
        if self.shuffle and self.epoch >= self.sorta_grad_epochs:
            rng.shuffle(batches)
        return batches

    def _full(self, bucket: list, longest: float, seconds: float) -> bool:
        if self.batch_size is not None:
            return len(bucket) >= self.batch_size
        return (len(bucket) + 1) * self.padded(max(longest, seconds)) > self.max_batch_seconds


def epoch_sampler(loader: DataLoader) -> Any:
    """What ``set_epoch`` is called on for a loader: its batch sampler, or a stream sampler it iterates."""
    if loader.batch_sampler is not None:
        return loader.batch_sampler
    return loader.dataset
