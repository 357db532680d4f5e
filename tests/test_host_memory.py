"""trainer.keep_freed_memory: glibc keeps freed activation memory for the next step."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hw_asr.checkpoint import CheckpointError
from hw_asr.config import ConfigError
from hw_asr.trainer import host_memory

PROBE = """
import resource, sys, torch
from hw_asr.trainer.host_memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
for _ in range(20):  # until the allocator has settled: small allocations land in between at first
    torch.ones(16 << 20)  # 64 MiB, every page written
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 << 20)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_kept_memory_is_reused_instead_of_mapped_and_zeroed_again():
    faults = {}
    for mode in ("default", "keep"):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, mode],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        ).stdout.split()
        assert out[0] == str(mode == "keep")
        faults[mode] = int(out[1])
    pages = 10 * (64 << 20) // 4096
    assert faults["default"] > 0.9 * pages  # every 64 MiB tensor mapped afresh: beyond glibc's 32 MiB ceiling
    assert faults["keep"] < 0.1 * pages


@pytest.mark.parametrize(
    "setting,device,called", [(None, "cpu", True), (None, "cuda", False), (False, "cpu", False), (True, "cuda", True)]
)
def test_the_default_keeps_freed_memory_on_the_cpu_only(monkeypatch, setting, device, called):
    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    assert host_memory.configure(setting, torch.device(device)) is called
    assert bool(calls) == called
    # where the C library takes no such setting, nothing is kept, and configure says so
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: False)
    assert host_memory.configure(setting, torch.device(device)) is False


def test_test_py_keeps_freed_memory_on_the_cpu_unless_told_not_to(tmp_path, monkeypatch):
    from hw_asr import evaluation

    seen = []
    monkeypatch.setattr(
        evaluation, "configure_host_memory", lambda setting, device: seen.append((setting, device.type))
    )
    missing = str(tmp_path / "missing.pth")  # set before the checkpoint is read, so a missing one will do
    for extra in ([], ["trainer.keep_freed_memory=false"]):
        with pytest.raises((FileNotFoundError, CheckpointError)):
            evaluation.main(["-r", missing, "-d", "cpu", *extra])
    assert seen == [(None, "cpu"), (False, "cpu")]
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="trainer.keep_freed_memory must be true, false or null, got 2"):
        evaluation.main(["-r", missing, "-d", "cpu", "trainer.keep_freed_memory=2"])
