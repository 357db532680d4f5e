"""Helpers shared by the batch samplers."""

import math

import torch


def grid_length(seconds: float, ratio: float) -> float:
    """The smallest point of the geometric grid ``ratio ** k`` (k any integer) at or above ``seconds``:
    a batch padded to it is at most ``ratio - 1`` longer than its longest utterance, and the lengths a
    whole corpus pads to are few (``log(longest / shortest) / log(ratio)``)."""
    k = math.ceil(math.log(seconds) / math.log(ratio) - 1e-9)
    return ratio**k


def world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1
    if not 0 <= (rank or 0) < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return rank or 0, world_size


def check_batching(
    max_batch_seconds: float | None, batch_size: int | None, length_grid: float | None, sorta_grad_epochs: int
) -> None:
    """The arguments every duration-bucketed sampler shares: exactly one batch limit, a ``length_grid`` ratio
    in (1, 2], a whole number of SortaGrad epochs."""
    if (max_batch_seconds is None) == (batch_size is None):
        raise ValueError("give exactly one of max_batch_seconds or batch_size")
    if length_grid is not None and not (isinstance(length_grid, (int, float)) and 1 < length_grid <= 2):
        raise ValueError(f"length_grid must be a ratio in (1, 2], such as 1.05, got {length_grid!r}")
    if isinstance(sorta_grad_epochs, bool) or not isinstance(sorta_grad_epochs, int) or sorta_grad_epochs < 0:
        raise ValueError(f"sorta_grad_epochs must be a whole number >= 0, got {sorta_grad_epochs!r}")
