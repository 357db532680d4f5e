"""The checkpoint files of a run folder: which are written when, by which rank, and which are kept.

The content of a checkpoint is the Trainer's (``Trainer.state``); the file format is ``hw_asr/checkpoint.py``'s.
"""

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hw_asr.checkpoint import epoch_checkpoints, rng_state, save_checkpoint
from hw_asr.trainer.distributed import DistInfo, all_gather_object

logger = logging.getLogger(__name__)

INTERRUPTED = "checkpoint-interrupted.pth"
BEST = "model_best.pth"

# the checkpoint's content, given the RNG states of every rank (``Trainer.state``)
StateOf = Callable[[list], dict[str, Any]]


class CheckpointManager:
    """``keep_last``: the periodic checkpoints kept (0 or None: all); ``model_best.pth`` is apart."""

    def __init__(self, run_dir: str | os.PathLike, dist: DistInfo, keep_last: int | None = None) -> None:
        self.run_dir, self.dist, self.keep_last = Path(run_dir), dist, keep_last

    def write(self, state_of: StateOf, name: str) -> Path:
        """Called on every rank: the RNG states of all ranks are gathered and ``state_of(rng_states)`` is
        written by rank 0 as ``name``. Returns the path."""
        path = self.run_dir / name
        rng_states = all_gather_object(rng_state())
        if self.dist.is_main:
            save_checkpoint(state_of(rng_states), path)
            logger.info("saved %s", path)
        return path

    def write_periodic(self, state_of: StateOf, epoch: int) -> Path:
        """``checkpoint-epoch<N>.pth``; then the oldest beyond ``keep_last`` go, and so does a checkpoint
        written on a signal, which the newer complete one replaces."""
        path = self.write(state_of, f"checkpoint-epoch{epoch}.pth")
        if self.dist.is_main:
            self.prune()
            (self.run_dir / INTERRUPTED).unlink(missing_ok=True)
        return path

    def prune(self) -> None:
        """Keep the newest ``keep_last`` periodic checkpoints."""
        if not self.keep_last:
            return
        periodic = epoch_checkpoints(self.run_dir)
        for old in [periodic[e] for e in sorted(periodic)][: -self.keep_last]:
            old.unlink(missing_ok=True)
