"""benchmarks/denormals.py: a trained checkpoint's training step against a fresh model's, with and
without subnormals flushed."""

import sys
from pathlib import Path

import pytest
import torch

from hw_asr.checkpoint import safe_torch_load
from tests.test_training import TINY, run_train

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO))
from benchmarks import denormals as bench  # noqa: E402


def test_subnormal_counts_see_only_subnormals():
    t = torch.tensor([0.0, 1e-39, -1e-40, 1e-30, 1.0, float("inf")])
    assert bench.subnormal_counts([t, torch.arange(3)]) == (2, 6)  # integer tensors are left out


def test_benchmark_compares_the_three_arms_on_the_same_batches(tmp_path, capsys):
    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1")
    ckpt = run_dir / "checkpoint-epoch1.pth"
    result = bench.main(
        ["-c", str(run_dir / "config.json"), "--checkpoint", str(ckpt), "--steps", "2", "--repeats", "1"]
    )
    assert set(result["wall"]) == set(bench.ARMS) and all(w > 0 for w in result["wall"].values())
    for arm in bench.ARMS:
        (run,) = result["runs"][arm]
        assert 0 <= run["optimizer_subnormal_share"] <= 1 and 0 <= run["activation_subnormal_share"] <= 1
    assert result["runs"]["fresh"][0]["shapes"] == result["runs"]["trained"][0]["shapes"]
    # the trained arms go on from the checkpoint's optimiser, the fresh one starts at 0
    done = safe_torch_load(ckpt)["step"]
    steps = {arm: result["runs"][arm][0]["optimizer_steps"] for arm in bench.ARMS}
    assert done > 0 and steps == {"fresh": 2, "trained": done + 2, "trained_flush": done + 2}
    out = capsys.readouterr().out
    assert "trained / fresh:" in out and "| trained_flush |" in out


def test_benchmark_refuses_a_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["-c", "configs/one_batch_test.json", "--checkpoint", str(tmp_path / "none.pth")])
