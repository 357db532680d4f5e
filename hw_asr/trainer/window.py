"""The training logs' window: what a logging step reports, accumulated on the device between logging steps."""

import time

import torch

from hw_asr.trainer.distributed import all_reduce_sum


class TrainWindow:
    """What the training logs are made of, accumulated over a window of batches (since the last logging
    step, or the epoch). Losses and counts stay device tensors until :meth:`reduce` reads them, once per
    logging step; :meth:`reduce` sums over the ranks."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        zero = torch.zeros((), device=self.device)
        self.loss, self.losses, self.infeasible = zero.clone(), zero.clone(), zero.clone()
        self.audio, self.wait, self.batches, self.utterances = 0.0, 0.0, 0, 0
        self.start = time.perf_counter()

    def add_batch(self, audio_seconds: float, wait_seconds: float) -> None:
        self.audio += audio_seconds
        self.wait += wait_seconds
        self.batches += 1

    def add_loss(self, loss: torch.Tensor, finite: torch.Tensor) -> None:
        """A batch's loss (a device scalar); ``finite``: whether it counts (a device bool)."""
        self.loss = self.loss + torch.where(finite, loss, torch.zeros_like(loss))
        self.losses = self.losses + finite

    def add_infeasible(self, infeasible: torch.Tensor) -> None:
        """Per utterance of a batch, whether CTC cannot align it (a device bool tensor; see ctc_infeasible)."""
        self.infeasible = self.infeasible + infeasible.sum()
        self.utterances += len(infeasible)

    def reduce(self, world_size: int) -> dict[str, float]:
        """The window's train logs over all ranks: mean loss, speeds (``batches_per_s`` on each rank,
        audio over all ranks), the mean share of time waiting for data, the share of utterances CTC cannot
        align; plus the counts ``infeasible`` and ``utterances``."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        loss_sum, loss_n, audio, wait_share, infeasible, utterances = all_reduce_sum(
            [
                float(self.loss),
                float(self.losses),
                self.audio,
                self.wait / elapsed,
                float(self.infeasible),
                self.utterances,
            ],
            self.device,
        )
        return {
            "loss": loss_sum / max(loss_n, 1),
            "batches_per_s": self.batches / elapsed,
            "audio_s_per_s": audio / elapsed,
            "data_wait_share": wait_share / world_size,
            "ctc_infeasible_share": infeasible / max(utterances, 1),
            "infeasible": infeasible,
            "utterances": utterances,
        }

    def epoch_loss(self) -> dict[str, float]:
        """``{"train_loss": mean}`` over this rank's finite losses (empty if none)."""
        n = int(self.losses)
        return {"train_loss": float(self.loss) / n} if n else {}
