"""The streamed data path: Lhotse Shar shards (export_shar), SharDataset and StreamBucketSampler."""

import json
import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hw_asr.audio import load_audio
from hw_asr.batch_sampler import StreamBucketSampler
from hw_asr.batch_sampler.common import grid_length
from hw_asr.builder import build_dataloader, build_dataset, check_batches
from hw_asr.checkpoint import load_checkpoint
from hw_asr.config import ConfigError, apply_overrides, load_config
from hw_asr.datasets import ManifestDataset, SharDataset
from hw_asr.tools import export_shar
from hw_asr.trainer.trainer import Trainer
from tests.conftest import REPO, SAMPLE_MANIFEST
from tests.test_training import TINY, assert_same_weights, interrupt_at_step, run_train, weights


@pytest.fixture(scope="module")
def sample_rows():
    return ManifestDataset(manifest_path=str(SAMPLE_MANIFEST)).index


@pytest.fixture(scope="module")
def shar(tmp_path_factory, sample_rows):
    """The bundled sample (16 utterances) in 8 FLAC shards of 2."""
    out = tmp_path_factory.mktemp("shar") / "sample"
    export_shar.export(sample_rows, out, shard_size=2)
    return out


def utterance_id(item):
    return item["audio_path"].rsplit(":", 1)[1]


def epoch_ids(sampler, epoch=0, start=0):
    sampler.set_epoch(epoch, start)
    return [[utterance_id(it) for it in batch] for batch in sampler]


def test_flac_export_reads_back_exactly(shar, sample_rows):
    index = json.loads((shar / "shar_index.json").read_text())
    assert len(index["shards"]) == 8 and index["utterances"] == 16
    assert index["seconds"] == pytest.approx(sum(len(load_audio(r["path"])) for r in sample_rows) / 16000)
    ds = SharDataset(str(shar))
    by_id = {r["path"].rsplit("/", 1)[1].rsplit(".", 1)[0]: r for r in sample_rows}
    sampler = StreamBucketSampler(ds, batch_size=1, shuffle=False, fill=1.0)
    seen = [it for batch in sampler for it in batch]
    assert sorted(utterance_id(it) for it in seen) == sorted(by_id)
    for item in seen:
        row = by_id[utterance_id(item)]
        assert item["text"] == row["text"]
        np.testing.assert_array_equal(item["audio"].numpy(), load_audio(row["path"]))  # lossless


def test_opus_export_is_smaller_and_close(tmp_path, shar, sample_rows):
    export_shar.export(sample_rows[:4], tmp_path / "opus", shard_size=2, fmt="opus")
    ds = SharDataset(str(tmp_path / "opus"))
    items = [it for b in StreamBucketSampler(ds, batch_size=1, shuffle=False, fill=1.0) for it in b]
    assert len(items) == 4
    flac_bytes = sum(p.stat().st_size for p in shar.glob("recording.00000[01].tar"))
    opus_bytes = sum(p.stat().st_size for p in (tmp_path / "opus").glob("recording.*.tar"))
    assert opus_bytes < flac_bytes / 2
    by_path = {r["path"].rsplit("/", 1)[1].rsplit(".", 1)[0]: r for r in sample_rows}
    for it in items:
        ref = load_audio(by_path[utterance_id(it)]["path"])
        assert abs(len(it["audio"]) - len(ref)) < 400  # the codec's padding, under 25 ms
    with pytest.raises(ValueError, match="Opus stores"):
        export_shar.export(sample_rows[:1], tmp_path / "bad", sample_rate=22050, fmt="opus")
    with pytest.raises(FileExistsError, match="not empty"):
        export_shar.export(sample_rows[:1], tmp_path / "opus")


def test_ranks_read_disjoint_shards_and_give_equal_batch_counts(shar):
    ds = SharDataset(str(shar))
    samplers = [StreamBucketSampler(ds, max_batch_seconds=5, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert len(samplers[0]) == len(samplers[1]) > 0
    assert not set(samplers[0].rank_shards(0)) & set(samplers[1].rank_shards(1))
    for epoch in (0, 1):
        ranks = [epoch_ids(s, epoch) for s in samplers]
        assert [len(b) for b in ranks] == [len(samplers[0])] * 2
        utts = [{u for batch in r for u in batch} for r in ranks]
        assert not utts[0] & utts[1], "no utterance goes to two ranks"
    every = StreamBucketSampler(ds, batch_size=1, shuffle=False)
    durations = {utterance_id(it): it["duration"] for b in every for it in b}
    for batch in epoch_ids(samplers[0]):  # padded to its longest, every batch fits
        assert len(batch) * max(durations[u] for u in batch) <= 5
    assert epoch_ids(samplers[0], 0) != epoch_ids(samplers[0], 1), "a new order every epoch"


def test_length_grid_pads_batches_to_grid_points(shar):
    ds = SharDataset(str(shar))
    sampler = StreamBucketSampler(ds, max_batch_seconds=7, length_grid=1.2, seed=0)
    for batch in sampler:
        longest = max(it["duration"] for it in batch)
        assert len(batch) * grid_length(longest, 1.2) <= 7


def test_sorta_grad_sends_each_buffer_from_short_to_long_in_its_first_epochs(shar):
    ds = SharDataset(str(shar))
    every = StreamBucketSampler(ds, batch_size=1, shuffle=False)
    duration = {utterance_id(it): it["duration"] for b in every for it in b}

    def maxima(sampler, epoch, start=0):
        return [max(duration[u] for u in batch) for batch in epoch_ids(sampler, epoch, start)]

    # one buffer holds the whole sample: the first pass is in exact order of length
    sampler = StreamBucketSampler(ds, batch_size=2, buffer_size=100, seed=4, sorta_grad_epochs=1)
    first, later = maxima(sampler, 0), maxima(sampler, 1)
    assert len(first) == 8 and first == sorted(first)
    assert later != sorted(later) and sorted(later) == first  # the same batches, shuffled
    default = StreamBucketSampler(ds, batch_size=2, buffer_size=100, seed=4)
    assert maxima(default, 0) != sorted(maxima(default, 0))
    assert maxima(sampler, 0, start=3) == first[3:]  # resumable like any other epoch
    # smaller buffers: short to long within each buffer of 4 utterances (2 batches)
    small = StreamBucketSampler(ds, batch_size=2, buffer_size=4, seed=4, sorta_grad_epochs=1)
    pairs = maxima(small, 0)
    assert all(a <= b for a, b in zip(pairs[::2], pairs[1::2]))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="sorta_grad_epochs"):
            StreamBucketSampler(ds, batch_size=2, sorta_grad_epochs=bad)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_gives_the_remaining_batches(shar, workers):
    ds = SharDataset(str(shar))
    sampler = StreamBucketSampler(ds, batch_size=2, seed=5)
    sampler.num_workers = workers

    def run(start):
        sampler.set_epoch(1, start)
        loader = DataLoader(sampler, batch_size=None, num_workers=workers, collate_fn=lambda b: b)
        return [[utterance_id(it) for it in batch] for batch in loader]

    whole = run(0)
    assert len(whole) == len(sampler) == 8
    assert run(3) == whole[3:]
    assert run(8) == []


def test_a_truncated_shard_is_skipped_with_a_warning_and_counted(tmp_path, sample_rows, caplog):
    export_shar.export(sample_rows, tmp_path / "s", shard_size=4)
    tar = tmp_path / "s" / "recording.000001.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 3])
    ds = SharDataset(str(tmp_path / "s"))
    ds.replace_failed_files = True  # training
    sampler = StreamBucketSampler(ds, batch_size=2, seed=0, shuffle=False, fill=1.0)
    with caplog.at_level(logging.WARNING):
        batches = list(sampler)
    assert len(batches) == len(sampler) == 8, "the epoch still gives its batches (a second pass fills in)"
    failures = [f for b in batches for it in b for f in it["load_failures"]]
    assert any("recording.000001.tar" in f for f in failures)
    assert "recording.000001.tar: truncated or corrupt shard" in caplog.text


def test_missing_shard_or_index_is_a_clear_error(tmp_path, sample_rows):
    export_shar.export(sample_rows[:4], tmp_path / "s", shard_size=2)
    (tmp_path / "s" / "recording.000001.tar").unlink()
    with pytest.raises(FileNotFoundError, match="recording.000001.tar, which is missing"):
        SharDataset(str(tmp_path / "s"))
    (tmp_path / "s" / "shar_index.json").unlink()
    with pytest.raises(FileNotFoundError, match="export_shar"):
        SharDataset(str(tmp_path / "s"))


def test_index_only_indexes_a_shar_folder_written_by_lhotse(tmp_path, shar):
    import shutil

    copy = tmp_path / "lhotse"
    shutil.copytree(shar, copy)
    (copy / "shar_index.json").unlink()
    index = export_shar.main(["--index-only", str(copy)])
    assert index["utterances"] == 16 and len(index["shards"]) == 8
    assert json.loads((shar / "shar_index.json").read_text())["shards"][0]["seconds"] == pytest.approx(
        index["shards"][0]["seconds"]
    )


def shar_config(shar, *overrides):
    config = load_config(REPO / "configs" / "one_batch_test.json")
    return apply_overrides(
        config,
        [
            f'data.train.datasets=[{{"type": "SharDataset", "args": {{"shar_dir": "{shar}"}}}}]',
            'data.train.batch_sampler={"type": "StreamBucketSampler", "args": {"batch_size": 2}}',
            *overrides,
        ],
    )


def test_the_builder_pairs_streams_with_stream_samplers_only(shar):
    from hw_asr.text_encoder import CTCCharTextEncoder

    enc = CTCCharTextEncoder("en")
    config = shar_config(shar)
    loader = build_dataloader(config, "train", build_dataset(config, "train", enc))
    assert len(loader) == 8 and loader.batch_sampler is None
    batch = next(iter(loader))
    assert batch["audio"].shape[0] == 2 and "text_encoded" in batch
    bad = shar_config(shar, 'data.train.batch_sampler={"type": "LengthBucketSampler", "args": {"batch_size": 2}}')
    with pytest.raises(ConfigError, match="StreamBucketSampler"):
        build_dataloader(bad, "train", build_dataset(bad, "train", enc))
    loose = apply_overrides(
        load_config(REPO / "configs" / "one_batch_test.json"),
        ['data.train.batch_sampler={"type": "StreamBucketSampler", "args": {"batch_size": 2}}'],
    )
    with pytest.raises(ConfigError, match="only a streamed dataset"):
        build_dataloader(loose, "train", build_dataset(loose, "train", enc))
    val = shar_config(shar, f'data.val.datasets=[{{"type": "SharDataset", "args": {{"shar_dir": "{shar}"}}}}]')
    with pytest.raises(ConfigError, match="streams are for training"):
        build_dataset(val, "val", enc)
    many = shar_config(shar, "data.train.num_workers=9")
    with pytest.raises(ConfigError, match="8 shard"):
        build_dataloader(many, "train", build_dataset(many, "train", enc))
    huge = shar_config(shar, 'data.train.batch_sampler={"type": "StreamBucketSampler", "args": {"batch_size": 99}}')
    with pytest.raises(ConfigError, match="makes no batch"):
        check_batches(huge, "train", build_dataloader(huge, "train", build_dataset(huge, "train", enc)))


def test_training_from_shards_resumes_mid_epoch_with_the_same_batches(tmp_path, shar, monkeypatch):
    """A run stopped by a signal mid-epoch and resumed sees the batches, and ends with the weights, of a run
    that was never stopped."""
    stream = [
        f'data.train.datasets=[{{"type": "SharDataset", "args": {{"shar_dir": "{shar}"}}}}]',
        'data.train.batch_sampler={"type": "StreamBucketSampler", "args": {"batch_size": 3, "seed": 7}}',
        "data.train.num_workers=2",
        "augmentations.wave=[]",
    ]
    overrides = [o for o in TINY if not o.startswith("data.train")] + stream
    seen = {}
    original_count = Trainer._count_load_failures

    def record(self, batch):
        seen.setdefault(self.run_dir.parent.name, []).append([p.rsplit(":", 1)[1] for p in batch["audio_path"]])
        return original_count(self, batch)

    monkeypatch.setattr(Trainer, "_count_load_failures", record)
    straight = run_train(tmp_path / "a", *overrides)
    undo = interrupt_at_step(monkeypatch, 3)
    run_dir = run_train(tmp_path / "b", *overrides)
    ckpt = run_dir / "checkpoint-interrupted.pth"
    state = load_checkpoint(ckpt)
    assert state["data_stream"]["num_workers"] == 2 and len(state["data_stream"]["shards"]) == 8
    undo()
    run_train(tmp_path / "b", resume=ckpt)
    assert len(seen["a"]) == 8 and seen["b"] == seen["a"], "the same batches, in the same order"
    first = [u for b in seen["a"][:5] for u in b]
    assert len(set(first)) == len(first), "one data epoch: 5 batches, no utterance twice"
    assert_same_weights(weights(straight / "checkpoint-epoch2.pth"), weights(run_dir / "checkpoint-epoch2.pth"))


def test_resume_with_other_workers_warns(shar, caplog):
    ds = SharDataset(str(shar))
    sampler = StreamBucketSampler(ds, batch_size=2)
    saved = sampler.state_dict()
    sampler.num_workers = 4
    with caplog.at_level(logging.WARNING):
        sampler.check_resume(saved)
    assert "num_workers: 0 -> 4" in caplog.text
    assert torch.is_tensor(next(iter(sampler))[0]["audio"])


def test_the_960_hour_shar_recipe_is_valid_and_reads_a_shar_folder(shar):
    from hw_asr.builder import validate_config
    from hw_asr.text_encoder import CTCCharTextEncoder

    config = load_config(REPO / "configs" / "conformer_m_librispeech_shar.json")
    validate_config(config)
    assert config["data"]["train"]["batch_sampler"]["type"] == "StreamBucketSampler"
    assert config["data"]["train"]["batch_sampler"]["args"] == {
        "max_batch_seconds": 480,
        "length_grid": 1.05,
        "buffer_size": 1000,
    }
    assert config["arch"]["type"] == "Conformer" and config["lr_scheduler"]["args"]["warmup_steps"] == 1000
    local = apply_overrides(config, [f'data.train.datasets.0.args.shar_dir="{shar}"', "data.train.num_workers=0"])
    loader = build_dataloader(local, "train", build_dataset(local, "train", CTCCharTextEncoder("en")))
    assert len(loader) == 0, "16 short utterances do not fill one 480 s batch"
    with pytest.raises(ConfigError, match="makes no batch"):
        check_batches(local, "train", loader)


@pytest.mark.slow
def test_two_processes_from_shards_read_disjoint_utterances_and_resume_exactly(tmp_path, shar):
    from benchmarks.shar import torchrun_check

    result = torchrun_check(shar, tmp_path, ["data.train.batch_sampler.args.max_batch_seconds=5"], 2, 3, 4)
    assert result["batches_per_rank"] == [6, 6]
    assert result["utterances_on_both_ranks"] == 0
    assert min(result["utterances_per_rank"]) > 0
    assert result["resumed_equals_straight"]


def test_shards_list_their_transcripts_without_audio_for_the_head_prior(shar, sample_rows):
    from hw_asr.model.output_prior import ctc_output_prior
    from hw_asr.text_encoder import CTCCharTextEncoder
    from tests.test_output_prior import FramesModel, Indexed

    rows = list(SharDataset(shar_dir=str(shar)).transcripts())
    assert sorted(r["text"] for r in rows) == sorted(r["text"] for r in sample_rows)
    assert sum(r["duration"] for r in rows) == pytest.approx(sum(r["duration"] for r in sample_rows), abs=0.01)
    enc = CTCCharTextEncoder("en")
    from_shards = ctc_output_prior(FramesModel(len(enc)), SharDataset(shar_dir=str(shar)), enc, 16000)
    from_files = ctc_output_prior(FramesModel(len(enc)), Indexed(sample_rows), enc, 16000)
    torch.testing.assert_close(from_shards, from_files, atol=1e-4, rtol=0)
