import os

import pytest
import torch

from hw_asr.augmentations import Gain, RandomApply, Sequential
from hw_asr.builder import build_dataset, build_lr_scheduler, build_wave_augs, resolve_num_workers
from hw_asr.config import ConfigError
from hw_asr.lr_schedulers import WarmupLR
from hw_asr.text_encoder import CTCCharTextEncoder

EN = CTCCharTextEncoder()


def test_several_datasets_in_a_split_are_concatenated(manifest_dir):
    block = {"type": "ManifestDataset", "args": {"manifest_path": str(manifest_dir / "manifest.jsonl")}}
    config = {"data": {"train": {"datasets": [block, {**block, "args": {**block["args"], "limit": 2}}]}}}
    ds = build_dataset(config, "train", EN)
    assert len(ds) == 5
    assert ds[4]["text_encoded"].dtype == torch.int64


def test_split_without_datasets_is_an_error():
    with pytest.raises(ConfigError, match="data.val.datasets"):
        build_dataset({"data": {"val": {"datasets": []}}}, "val", EN)


def test_unknown_dataset_type_lists_known():
    config = {"data": {"val": {"datasets": [{"type": "Librispeech", "args": {}}]}}}
    with pytest.raises(ConfigError, match="LibrispeechDataset"):
        build_dataset(config, "val", EN)


def test_nested_augmentations_resolve_and_chain():
    config = {
        "augmentations": {
            "wave": [
                {
                    "type": "RandomApply",
                    "args": {"p": 1.0, "augmentation": {"type": "Gain", "args": {"min_gain_db": 6, "max_gain_db": 6}}},
                },
                {
                    "type": "Sequential",
                    "args": {"augmentations": [{"type": "Gain", "args": {"min_gain_db": -6, "max_gain_db": -6}}]},
                },
            ]
        }
    }
    aug = build_wave_augs(config)
    assert isinstance(aug, Sequential) and isinstance(aug.augmentations[0], RandomApply)
    assert isinstance(aug.augmentations[0].augmentation, Gain)
    x = torch.ones(100)
    torch.testing.assert_close(aug(x), x)  # +6 dB then -6 dB
    assert build_wave_augs({}) is None


def test_warmup_schedule_shape():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupLR(opt, warmup_steps=4, total_steps=12, decay="cosine")
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] < 0.05


def test_one_cycle_gets_total_steps_from_the_run():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_lr_scheduler({"lr_scheduler": {"type": "OneCycleLR", "args": {"max_lr": 1.0}}}, opt, 50)
    assert sched.total_steps == 50
    with pytest.raises(ConfigError, match="unknown type"):
        build_lr_scheduler({"lr_scheduler": {"type": "Nope", "args": {}}}, opt, 50)


def test_num_workers_auto_follows_the_cores_per_rank(monkeypatch):
    for cores, ranks, expected in [(2, 1, 0), (4, 1, 0), (6, 1, 3), (16, 1, 8), (64, 1, 8), (16, 2, 4), (16, 4, 0)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks))
        assert resolve_num_workers("auto", "w") == expected, (cores, ranks)
    assert resolve_num_workers(3, "w") == 3
    for bad in (-1, "four", 1.5, True):
        with pytest.raises(ConfigError, match="data.train.num_workers must be a non-negative integer"):
            resolve_num_workers(bad, "data.train.num_workers")
