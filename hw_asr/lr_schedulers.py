"""Per-step learning-rate schedules beyond torch's (which are usable by name as well)."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupLR"]


class WarmupLR(LambdaLR):
    """Linear warm-up over ``warmup_steps``, then ``decay`` to ``min_lr_ratio`` of the peak at
    ``total_steps``: ``cosine``, ``linear``, ``constant``, or ``inverse_sqrt`` (Noam-style).

    ``total_steps`` defaults to the run's number of optimiser steps.
    """

    needs_total_steps = True

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 1000,
        total_steps: int | None = None,
        decay: str = "cosine",
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if decay not in ("cosine", "linear", "constant", "inverse_sqrt"):
            raise ValueError(f"decay must be cosine, linear, constant or inverse_sqrt, got {decay!r}")
        if decay in ("cosine", "linear") and not total_steps:
            raise ValueError(f"decay {decay!r} needs total_steps")
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.decay, self.min_lr_ratio = decay, min_lr_ratio
        super().__init__(optimizer, self._factor, last_epoch)

    def _factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        if self.decay == "inverse_sqrt":
            return math.sqrt(max(self.warmup_steps, 1) / (step + 1))
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if self.decay == "cosine" else 1 - progress
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * shape
