"""torchrun with 2 CPU processes (gloo) against one process with the same global batch."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from hw_asr.config import ConfigError
from hw_asr.model import Conformer, LogMelFrontend
from hw_asr.trainer.distributed import DistInfo, pick_device, sync_batchnorm
from tests.conftest import REPO
from tests.test_training import TINY, assert_same_weights, run_train, weights

NO_AUG = [o for o in TINY if not o.startswith("arch")] + [
    'arch={"type": "BaselineModel", "args": {"hidden": 32, "frontend": {"n_mels": 32}}}',
    "data.train.datasets.0.args.limit=8",
    "trainer.len_epoch=4",
    "trainer.epochs=2",
    'lr_scheduler={"type": "WarmupLR", "args": {"warmup_steps": 2, "decay": "constant"}}',
]


def epoch_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "epoch"]


def torchrun(tmp_path, *overrides, resume=None, check=True, timeout=300):
    """``train.py`` under torchrun with 2 CPU processes (the demo config, or ``-r resume``); a session of its
    own, so that on a time-out the ranks are killed with the launcher instead of being left spinning."""
    args = ["-r", str(resume)] if resume else ["-c", str(REPO / "configs" / "one_batch_test.json")]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "train.py",
        *args,
        f"trainer.save_dir={tmp_path}",
        *overrides,
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun did not end within {timeout} s")
    if check:
        assert proc.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process(tmp_path):
    single = run_train(tmp_path / "one", *NO_AUG, "data.train.batch_size=2", "trainer.grad_accum_steps=2")
    torchrun(tmp_path / "two", *NO_AUG, "data.train.batch_size=1", "trainer.grad_accum_steps=2", "trainer.run_name=ddp")
    ddp_dir = tmp_path / "two" / "ddp"
    assert sorted(p.name for p in ddp_dir.glob("*.pth")) == ["checkpoint-epoch1.pth", "checkpoint-epoch2.pth"]
    # gradients are summed in another order across processes; Adam magnifies the last bits a little
    assert_same_weights(
        weights(single / "checkpoint-epoch2.pth"), weights(ddp_dir / "checkpoint-epoch2.pth"), atol=1e-4
    )
    # the logged audio throughput counts both ranks: per batch of each rank, the global batch's audio
    train_one, train_two = (
        [r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
        for d in (single, ddp_dir)
    )
    assert len(train_one) == len(train_two) > 0
    for a, b in zip(train_one, train_two):
        assert a["audio_s_per_s"] / a["batches_per_s"] == pytest.approx(b["audio_s_per_s"] / b["batches_per_s"])
        assert 0 < b["data_wait_share"] < 1
    one, two = epoch_rows(single), epoch_rows(ddp_dir)
    for a, b in zip(one, two):
        assert a["val_WER (argmax)"] == pytest.approx(b["val_WER (argmax)"])
        assert a["val_CER (argmax)"] == pytest.approx(b["val_CER (argmax)"])
    assert len((ddp_dir / "metrics.jsonl").read_text().splitlines()) == len(
        (single / "metrics.jsonl").read_text().splitlines()
    ), "only rank 0 writes"

    # resume the 2-process run from its checkpoint for one more epoch
    torchrun(tmp_path / "two", "trainer.epochs=3", resume=ddp_dir / "checkpoint-epoch2.pth")
    assert (ddp_dir / "checkpoint-epoch3.pth").is_file()


def test_sync_batchnorm_converts_only_a_multi_process_cuda_run(caplog):
    def conformer():
        torch.manual_seed(0)
        return Conformer(29, dim=32, heads=2, layers=2, conv_kernel=7, frontend=LogMelFrontend(n_mels=32))

    plain = conformer()
    n_bn = sum(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    assert n_bn == 2  # one per convolution module
    synced = sync_batchnorm(conformer(), DistInfo(rank=0, world_size=2, device=torch.device("cuda", 0)))
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules()) == n_bn
    assert synced.state_dict().keys() == plain.state_dict().keys()  # checkpoints load either way
    for key, value in plain.state_dict().items():
        assert torch.equal(synced.state_dict()[key], value), key
    one_rank = sync_batchnorm(conformer(), DistInfo(world_size=1, device=torch.device("cuda", 0)))
    on_cpu = sync_batchnorm(conformer(), DistInfo(rank=0, world_size=2, device=torch.device("cpu")))
    for model in (one_rank, on_cpu):
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert "trainer.sync_batchnorm needs CUDA" in caplog.text


def test_pick_device_refuses_a_device_torch_cannot_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == pick_device(None) == torch.device("cpu")
    with pytest.raises(ConfigError, match="'cuda', but torch .* sees no CUDA device"):
        pick_device("cuda")
    with pytest.raises(ConfigError, match="'gpu' is not a device"):
        pick_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto", local_rank=1) == pick_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert pick_device("cuda:0", local_rank=1) == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="'cuda:2', but torch sees 2 CUDA device"):
        pick_device("cuda:2")
