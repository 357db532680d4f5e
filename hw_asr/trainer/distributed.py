"""torch.distributed as torchrun starts it: one process per device, gloo on CPU, nccl on CUDA."""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from hw_asr.device import pick_device

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str | None = None) -> DistInfo:
    """Read ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (set by torchrun) and join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return DistInfo(device=pick_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(device_name, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    logger.info("rank %d of %d on %s (%s)", rank, world_size, device, backend)
    return DistInfo(rank, world_size, local_rank, device)


def sync_batchnorm(model: torch.nn.Module, dist_info: DistInfo) -> torch.nn.Module:
    """Batch norm with statistics over the global batch (``trainer.sync_batchnorm``), for a
    multi-process run on CUDA (torch's SyncBatchNorm has no CPU kernel: elsewhere each rank
    keeps its own statistics, with a warning). Parameter and buffer names do not change,
    so checkpoints load either way."""
    if not dist_info.enabled:
        return model
    if dist_info.device.type != "cuda":
        logger.warning(
            "trainer.sync_batchnorm needs CUDA; batch norm statistics stay per rank on %s", dist_info.device.type
        )
        return model
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sum of a list of numbers over all ranks (the list itself on one process)."""
    if not _active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    return all_reduce_sum([float(bool(flag))], device)[0] > 0


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _active():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
