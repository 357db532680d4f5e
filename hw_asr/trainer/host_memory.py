"""Host-memory allocation for training on the CPU.

A training step frees and allocates the same large activation buffers every step.
glibc's malloc serves each allocation above its mmap threshold (128 KiB, rising to at
most 32 MiB as such blocks are freed) with fresh pages from the kernel and returns them
on free, so every step pays for mapping and zeroing its activations again: for a
Conformer-S step on 2 cores, about 570k minor page faults and 1.5-2 s of system CPU
time (BENCHMARKS.md). Raising the mmap and trim thresholds keeps freed memory in the
process for the next step, as jemalloc or tcmalloc (the usual advice, loaded through
``LD_PRELOAD``) would, at the price of a resident size that stays near its peak.
"""

import ctypes
import logging
import sys
from typing import TYPE_CHECKING

from hw_asr.config import ConfigError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, malloc.h
MMAP_THRESHOLDS = (1 << 30, 32 << 20)  # the first glibc accepts (some builds cap it at 32 MiB)
TRIM_THRESHOLD = 2**31 - 1  # the largest mallopt takes: freed memory stays unless 2 GiB sit unused at the top


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse. True when both thresholds took
    effect; False on other C libraries and systems, whose allocators are left as they are."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not any(mallopt(M_MMAP_THRESHOLD, t) == 1 for t in MMAP_THRESHOLDS):
        return False  # musl's mallopt, for one, accepts nothing
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


def configure(setting: bool | None, device: "torch.device") -> bool:
    """``trainer.keep_freed_memory``: true, false, or null (default: true on the CPU).
    Returns whether freed memory is now kept (False where the C library has no such setting)."""
    if not isinstance(setting, (bool, type(None))):
        raise ConfigError(f"trainer.keep_freed_memory must be true, false or null, got {setting!r}")
    if setting is None:
        setting = device.type == "cpu"
    if not setting:
        return False
    if not keep_freed_memory():
        logger.info("trainer.keep_freed_memory: this C library has no glibc mallopt; its allocator keeps its defaults")
        return False
    return True
