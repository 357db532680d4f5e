import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import ConcatDataset

from hw_asr.batch_sampler import LengthBucketSampler, RandomBatchSampler, dataset_durations


class FakeDataset:
    def __init__(self, durations):
        self.index = [{"duration": d} for d in durations]

    def __len__(self):
        return len(self.index)


def durations(n, seed=0):
    rng = random.Random(seed)
    return [round(rng.uniform(1.0, 20.0), 2) for _ in range(n)]


def epoch_indices(sampler, epoch):
    sampler.set_epoch(epoch)
    return [i for batch in sampler for i in batch]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 200), budget=st.floats(20.0, 120.0), buckets=st.integers(1, 40), seed=st.integers(0, 5))
def test_bucket_sampler_covers_every_index_once_within_budget(n, budget, buckets, seed):
    ds = FakeDataset(durations(n, seed))
    sampler = LengthBucketSampler(ds, max_batch_seconds=budget, num_buckets=buckets, seed=seed)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(n))
        for b in batches:
            assert len(b) * max(ds.index[i]["duration"] for i in b) <= budget


def test_fixed_size_bucketing_and_determinism():
    ds = FakeDataset(durations(103))
    a = LengthBucketSampler(ds, batch_size=8, seed=3)
    b = LengthBucketSampler(ds, batch_size=8, seed=3)
    assert epoch_indices(a, 0) == epoch_indices(b, 0)
    assert epoch_indices(a, 0) != epoch_indices(a, 1), "buckets are reshuffled every epoch"
    assert epoch_indices(a, 0) != epoch_indices(LengthBucketSampler(ds, batch_size=8, seed=4), 0)
    a.set_epoch(0)
    sizes = [len(batch) for batch in a]
    assert sizes.count(8) == 12 and sorted(sizes)[0] == 7


def test_bucketing_reduces_padding():
    ds = FakeDataset(durations(400))
    d = [r["duration"] for r in ds.index]

    def padding(sampler):
        sampler.set_epoch(0)
        cost = [len(b) * max(d[i] for i in b) for b in sampler]
        return 1 - sum(d) / sum(cost)

    assert padding(LengthBucketSampler(ds, batch_size=16)) < 0.05 < 0.2 < padding(RandomBatchSampler(ds, 16))


@pytest.mark.parametrize(
    "make",
    [
        lambda ds, r, w: LengthBucketSampler(ds, max_batch_seconds=60, rank=r, world_size=w, seed=1),
        lambda ds, r, w: LengthBucketSampler(ds, batch_size=5, rank=r, world_size=w, seed=1),
        lambda ds, r, w: RandomBatchSampler(ds, 4, rank=r, world_size=w, seed=1),
    ],
)
@pytest.mark.parametrize("world", [2, 3])
def test_shards_are_disjoint_and_equal_in_length(make, world):
    ds = FakeDataset(durations(97))
    shards = []
    for rank in range(world):
        sampler = make(ds, rank, world)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    assert len({len(s) for s in shards}) == 1, "every rank gets the same number of batches"
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen)), "no utterance goes to two ranks"
    assert len(seen) >= 97 - 3 * 20


def test_random_sampler_matches_one_process_with_the_global_batch():
    ds = FakeDataset(durations(40))
    one = RandomBatchSampler(ds, 4, seed=7, world_size=1, rank=0)
    two = [RandomBatchSampler(ds, 2, seed=7, world_size=2, rank=r) for r in range(2)]
    one.set_epoch(1)
    for s in two:
        s.set_epoch(1)
    for global_batch, *parts in zip(one, *two):
        assert global_batch == [i for p in parts for i in p]


def test_eval_sharding_covers_everything_once():
    ds = FakeDataset(durations(11))
    shards = [list(RandomBatchSampler(ds, 4, shuffle=False, rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for s in shards for b in s for i in b) == list(range(11))


def test_resume_position_and_errors():
    ds = FakeDataset(durations(30))
    s = LengthBucketSampler(ds, batch_size=4, seed=0)
    s.set_epoch(5)
    full = list(s)
    s.set_epoch(5, start_batch=3)
    assert list(s) == full[3:]
    with pytest.raises(ValueError, match="exactly one"):
        LengthBucketSampler(ds)
    with pytest.raises(ValueError, match="does not fit"):
        LengthBucketSampler(ds, max_batch_seconds=5.0)
    with pytest.raises(ValueError, match="outside world_size"):
        RandomBatchSampler(ds, 2, rank=2, world_size=2)


def test_durations_of_concatenated_datasets():
    assert dataset_durations(ConcatDataset([FakeDataset([1.0, 2.0]), FakeDataset([3.0])])) == [1.0, 2.0, 3.0]


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 200),
    budget=st.floats(40.0, 200.0),
    ratio=st.sampled_from([1.02, 1.05, 1.1]),
    seed=st.integers(0, 5),
)
def test_length_grid_pads_to_few_lengths_within_budget(n, budget, ratio, seed):
    from hw_asr.batch_sampler import grid_length

    d = durations(n, seed)
    sampler = LengthBucketSampler(FakeDataset(d), max_batch_seconds=budget, length_grid=ratio, seed=seed)
    batches = sampler.all_batches()
    assert sorted(i for b in batches for i in b) == list(range(n))
    for b in batches:
        longest = max(d[i] for i in b)
        padded = sampler.padded(longest)
        assert longest <= padded <= longest * ratio + 1e-9
        assert padded == pytest.approx(grid_length(padded, ratio))  # a grid point
        assert len(b) * padded <= budget + 1e-9 or len(b) == 1


def test_length_grid_gives_few_shapes_and_collate_pads_to_it():
    import torch

    from hw_asr.builder import build_dataloader

    d = durations(400, seed=1)
    plain = LengthBucketSampler(FakeDataset(d), max_batch_seconds=100)
    grid = LengthBucketSampler(FakeDataset(d), max_batch_seconds=100, length_grid=1.05)
    grid_lengths = {round(grid.padded(max(d[i] for i in b)), 6) for b in grid.all_batches()}
    plain_lengths = {max(d[i] for i in b) for b in plain.all_batches()}
    assert len(grid_lengths) <= 62  # 1 s to 20 s in steps of 5%
    assert len(plain_lengths) > 1.5 * len(grid_lengths)

    class Audio:
        index = [{"duration": s} for s in (1.0, 1.3, 2.2)]

        def __len__(self):
            return 3

        def __getitem__(self, i):
            n = int(self.index[i]["duration"] * 16000)
            return {"audio": torch.ones(n), "text": "a", "audio_path": str(i), "duration": n / 16000}

    config = {
        "sample_rate": 16000,
        "data": {
            "train": {
                "batch_sampler": {
                    "type": "LengthBucketSampler",
                    "args": {"max_batch_seconds": 10, "length_grid": 1.05, "shuffle": False},
                }
            }
        },
    }
    batches = list(build_dataloader(config, "train", Audio()))
    assert len(batches) == 1
    batch = batches[0]
    from hw_asr.batch_sampler import grid_length

    assert batch["audio"].shape[1] == pytest.approx(grid_length(2.2, 1.05) * 16000, abs=1)
    assert batch["audio"].shape[1] >= 2.2 * 16000
    assert batch["audio_length"].tolist() == [16000, 20800, 35200]  # real lengths are kept
    assert batch["audio"][0, 16000:].abs().sum() == 0  # padding is zeros
    with pytest.raises(ValueError, match="length_grid must be a ratio"):
        LengthBucketSampler(FakeDataset(d), max_batch_seconds=100, length_grid=3)


def test_sorta_grad_orders_the_first_passes_from_short_to_long_then_shuffles():
    ds = FakeDataset(durations(120, seed=3))
    longest = [ds.index[i]["duration"] for i in range(len(ds))]

    def batch_maxima(sampler, epoch):
        sampler.set_epoch(epoch)
        return [max(longest[i] for i in b) for b in sampler]

    sampler = LengthBucketSampler(ds, max_batch_seconds=60, num_buckets=120, sorta_grad_epochs=2, seed=1)
    for epoch in (0, 1):  # one utterance per bucket: the pass is in exact order of length
        maxima = batch_maxima(sampler, epoch)
        assert maxima == sorted(maxima) and len(maxima) > 10
    later = batch_maxima(sampler, 2)
    assert later != sorted(later) and sorted(later) == batch_maxima(sampler, 0)  # same batches, shuffled
    default = LengthBucketSampler(ds, max_batch_seconds=60, num_buckets=120, seed=1)
    assert batch_maxima(default, 0) != sorted(batch_maxima(default, 0))
    # the sorted pass is resumable and sharded like any other
    sampler.set_epoch(0, start_batch=3)
    assert [max(longest[i] for i in b) for b in sampler] == batch_maxima(sampler, 0)[3:]
    ranks = [LengthBucketSampler(ds, max_batch_seconds=60, sorta_grad_epochs=1, rank=r, world_size=2) for r in (0, 1)]
    seen = [i for s in ranks for i in epoch_indices(s, 0)]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_sorta_grad_epochs_must_be_a_whole_number(bad):
    with pytest.raises(ValueError, match="sorta_grad_epochs"):
        LengthBucketSampler(FakeDataset([1.0, 2.0]), batch_size=1, sorta_grad_epochs=bad)
