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
