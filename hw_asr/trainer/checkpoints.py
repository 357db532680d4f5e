"""The checkpoint files of a run folder: which are written when, by which rank, and which are kept; and a new
run's start from another checkpoint's weights (``trainer.init_weights``).

The content of a checkpoint is the Trainer's (``Trainer.state``); the file format is ``hw_asr/checkpoint.py``'s.
"""

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hw_asr.checkpoint import compare_weights, epoch_checkpoints, load_checkpoint, rng_state, save_checkpoint
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


def is_counter(name: str) -> bool:
    """Bookkeeping buffers (BatchNorm's step counter) that hold no learned value."""
    return name.endswith("num_batches_tracked")


def load_matching_weights(
    model: torch.nn.Module, path: str | os.PathLike, arch: str | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Copy every tensor of ``path``'s model whose name and shape match; report the rest.

    Counters (BatchNorm's ``num_batches_tracked``) are copied but not counted as weights. Loading
    fewer than half of the model's weights is a warning naming both architectures (``arch``: this
    model's ``arch.type``): the checkpoint is most likely of another architecture."""
    checkpoint = load_checkpoint(path)
    state = checkpoint["model"]
    own = model.state_dict()
    missing, unexpected, reshaped = compare_weights(own, state)
    rejected = set(unexpected) | set(reshaped)
    loaded = {k: v for k, v in state.items() if k not in rejected}
    skipped = sorted(k for k in missing + reshaped if not is_counter(k))
    model.load_state_dict(loaded, strict=False)
    n_loaded = sum(not is_counter(k) for k in loaded)
    n_weights = sum(not is_counter(k) for k in own)
    listed = f": {', '.join(skipped[:20])}{', ...' if len(skipped) > 20 else ''}" if skipped else ""
    if n_loaded * 2 < n_weights:
        trained_as = (checkpoint.get("config") or {}).get("arch", {}).get("type", "?")
        logger.warning(
            "init_weights %s: loaded only %d of this model's %d weight tensors, kept %d freshly "
            "initialised: the checkpoint is a %s, this model a %s%s",
            path,
            n_loaded,
            n_weights,
            len(skipped),
            trained_as,
            arch or "?",
            listed,
        )
    else:
        logger.info(
            "init_weights %s: loaded %d of %d weight tensors, kept %d freshly initialised%s",
            path,
            n_loaded,
            n_weights,
            len(skipped),
            listed,
        )
    return loaded, skipped
