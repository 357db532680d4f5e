"""One optimiser step of training, apart from the loop around it: forward and backward of each batch
(autocast, loss scaling, gradient accumulation, running out of memory), then the step (clipping, skipping
a non-finite step without the host reading the flag, the schedule) and the counters of skipped steps."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping

import torch

from hw_asr.inference import autocast_context, batch_samples
from hw_asr.trainer.distributed import DistInfo, any_rank

logger = logging.getLogger(__name__)


class StepRunner:
    """Forward/backward and the optimiser step of ``model`` (wrapped in DDP under torchrun).

    ``accum``: batches per optimiser step; ``clip``: the gradient norm clipped to (None: none); ``amp``:
    fp32, fp16 or bf16 (CUDA only; elsewhere fp32 with a warning). Skipped steps are counted on the device;
    :meth:`read_skips` reads the counts (at logging steps and epoch ends)."""

    def __init__(
        self,
        model: torch.nn.Module,
        criterion: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        device: torch.device,
        dist: DistInfo,
        accum: int = 1,
        clip: float | None = None,
        amp: str = "fp32",
        sample_rate: int = 16000,
    ) -> None:
        self.model, self.criterion, self.optimizer, self.lr_scheduler = model, criterion, optimizer, lr_scheduler
        self.device, self.dist, self.accum, self.clip, self.sample_rate = device, dist, accum, clip, sample_rate
        if amp != "fp32" and device.type != "cuda":
            logger.warning("trainer.amp=%s needs CUDA; training in fp32 on %s", amp, device.type)
            amp = "fp32"
        self.amp = amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.oom_batches = 0  # batches skipped for running out of device memory
        # on the device, read by read_skips: skips since the last read, the current run of consecutive
        # skips and the longest run since the last read
        self._skips = torch.zeros((), dtype=torch.long, device=device)
        self._run = torch.zeros((), dtype=torch.long, device=device)
        self._longest_run = torch.zeros((), dtype=torch.long, device=device)

    def forward_backward(
        self, batch: Mapping, sync: bool = True
    ) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
        """Forward and backward of one batch: ``(outputs, loss)``, the loss a device tensor.

        Backward runs whatever the loss: a non-finite one makes the gradient non-finite and the
        optimiser step is skipped then (:meth:`optimizer_step`), without the host reading the loss.
        Running out of device memory frees what it can, logs the batch size and gives ``(None, None)``;
        under DDP the ranks agree on that first (none runs backward if one cannot: a host read per step
        in multi-process runs). ``sync=False`` (inside an accumulation window) skips the gradient all-reduce.
        """
        outputs = loss = None
        try:
            with autocast_context(self.device, self.amp):
                outputs = self.model(**batch)
            loss = self.criterion(**batch, **outputs)["loss"]
        except torch.OutOfMemoryError:
            outputs = loss = None
            self.oom_batches += 1
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            b, t = batch["audio"].shape
            logger.warning(
                "out of memory on a batch of %d utterances x %d samples (%.1f s of audio in all); batch skipped",
                b,
                t,
                batch_samples(batch) / self.sample_rate,
            )
        # every rank takes part in the agreement, whether its own batch ran out of memory or not
        if (self.dist.enabled and any_rank(loss is None, self.device)) or loss is None:
            return outputs, None
        no_sync = self.model.no_sync() if self.dist.enabled and not sync else contextlib.nullcontext()
        with no_sync:
            self.scaler.scale(loss / self.accum).backward()
        return outputs, loss.detach()

    def optimizer_step(self, loss_ok: torch.Tensor) -> torch.Tensor:
        """Clip, step unless a loss or the gradient is not finite (``loss_ok``: a device bool), schedule.

        The decision stays on the device: fused optimisers (``fused=True``: Adam, AdamW, SGD; the default
        on CUDA) and the fp16 GradScaler skip the update themselves, given the flag; other optimisers need
        the host to read it (one wait per step). Returns the gradient norm (a device tensor)."""
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if params:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip if self.clip else math.inf)
            skip = ~(torch.isfinite(grad_norm) & loss_ok)
            if self.scaler.is_enabled():
                self.scaler.step(self.optimizer)  # skips on its own inf/nan check of the gradients
            elif all(g.get("fused") for g in self.optimizer.param_groups):  # as loaded (a resume can change it)
                self.optimizer.grad_scale, self.optimizer.found_inf = None, skip.float()
                try:
                    self.optimizer.step()
                finally:
                    del self.optimizer.grad_scale, self.optimizer.found_inf
            elif not skip:  # the host reads the flag: optimisers without a fused kernel
                self.optimizer.step()
            self.scaler.update()
        else:  # no backward ran in this step (out of memory): a non-finite loss still counts as a skip
            grad_norm = torch.full((), float("nan"), device=self.device)
            skip = ~loss_ok
        self.optimizer.zero_grad(set_to_none=True)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self._skips = self._skips + skip
        self._run = (self._run + 1) * skip  # consecutive skipped steps up to this one
        self._longest_run = torch.maximum(self._longest_run, self._run)
        return grad_norm

    def read_skips(self) -> tuple[int, int]:
        """``(skipped steps, longest run of consecutive skips)`` since the last read (a host read); the
        counts start again from here, the run in progress carried on."""
        skips, longest = int(self._skips), int(self._longest_run)
        self._skips.zero_()
        self._longest_run = self._run.clone()
        return skips, longest
