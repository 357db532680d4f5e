"""The training loop: steps, accumulation, clipping, AMP, validation, checkpoints, resume."""

import logging
import math
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader
from tqdm import tqdm

from hw_asr.alignment import align_batch
from hw_asr.batch_sampler.stream import epoch_sampler
from hw_asr.checkpoint import (
    load_checkpoint,
    set_rng_state,
)
from hw_asr.config import ConfigError
from hw_asr.inference import batch_samples, move_batch, score_split
from hw_asr.logger import Writer
from hw_asr.loss import ctc_infeasible
from hw_asr.metric import calc_cer, calc_wer
from hw_asr.schema import RunSpec, parse_monitor
from hw_asr.text_encoder.base import BaseTextEncoder
from hw_asr.trainer.checkpoints import BEST, INTERRUPTED, CheckpointManager
from hw_asr.trainer.distributed import DistInfo, all_reduce_sum, any_rank
from hw_asr.trainer.step import StepRunner
from hw_asr.trainer.window import TrainWindow
from hw_asr.visual import alignment_figure

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many optimiser steps in a row had a non-finite loss or gradient."""


def continue_schedule(scheduler: LRScheduler, step: int) -> None:
    """Put a freshly built per-step schedule at ``step`` (steps already taken) and set the optimiser's
    learning rates to its value there. For schedules whose rate is a function of the step (OneCycleLR,
    LambdaLR and WarmupLR), not of the rate before it."""
    scheduler.last_epoch = step - 1
    scheduler._step_count = max(scheduler._step_count, 2)  # past the first call: torch's order check is done
    scheduler.step()


class Trainer:
    """Trains ``model`` as ``spec.trainer`` says and writes into ``run_dir``.

    ``spec``: the run's :class:`hw_asr.schema.RunSpec` (``hw_asr.builder.validate_config`` makes it); the
    ``trainer`` block's keys, defaults and checks: :class:`hw_asr.schema.TrainerConfig`.

    ``callbacks``: objects with any of ``on_batch(trainer, batch, fetch_seconds)`` (a batch arrived from
    the loader, before its forward), ``on_step_end(trainer)`` (after each optimiser step, before any
    logging) and ``on_log(trainer, media)`` (a logging step was written; ``media``: media (spectrogram, audio,
    predictions) went to comet or TensorBoard too). Benchmarks time and record steps through them.

    Under torchrun ``model`` is wrapped in DistributedDataParallel: every rank trains
    on its shard, metrics are summed over ranks, and only rank 0 writes files.
    """

    _clock = staticmethod(time.monotonic)  # what ``trainer.time_budget_s`` is measured with

    def __init__(
        self,
        model: torch.nn.Module,
        criterion: torch.nn.Module,
        metrics: list,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: LRScheduler | None,
        text_encoder: BaseTextEncoder,
        spec: RunSpec,
        device: torch.device,
        train_loader: DataLoader,
        eval_loaders: Mapping[str, DataLoader],
        run_dir: str | os.PathLike,
        writer: Writer,
        dist_info: DistInfo | None = None,
        decoders: Mapping[str, Any] | None = None,
        callbacks: Iterable[Any] = (),
    ) -> None:
        self.model, self.criterion, self.metrics = model, criterion, metrics
        self.raw_model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        self.dist = dist_info or DistInfo(device=device)
        self.optimizer, self.lr_scheduler, self.text_encoder = optimizer, lr_scheduler, text_encoder
        self.spec, self.device, self.run_dir, self.writer = spec, device, Path(run_dir), writer
        self.train_loader, self.eval_loaders = train_loader, eval_loaders
        self.sample_rate = spec.sample_rate
        cfg = spec.trainer
        self.epochs = cfg.epochs
        self.len_epoch = cfg.steps_per_epoch(len(train_loader))
        self.log_step, self.media_step = cfg.log_step, cfg.media_step
        self._media_window = None  # media_step window of the last media logged
        self.accum = cfg.grad_accum_steps
        if self.len_epoch % self.accum:
            raise ConfigError(
                f"trainer.len_epoch ({self.len_epoch}) must be a multiple of trainer.grad_accum_steps ({self.accum})"
            )
        self.save_period, self.keep_last = cfg.save_period, cfg.keep_last
        self.checkpoints = CheckpointManager(self.run_dir, self.dist, self.keep_last)
        self.max_nonfinite_steps = cfg.max_nonfinite_steps
        self.early_stop = cfg.early_stop or math.inf
        self.mode, self.monitor_key = parse_monitor(cfg.monitor)
        self.max_predictions = cfg.max_predictions_logged
        self.runner = StepRunner(
            model,
            criterion,
            optimizer,
            lr_scheduler,
            device,
            self.dist,
            accum=self.accum,
            clip=cfg.grad_norm_clip,
            amp=cfg.amp,
            sample_rate=self.sample_rate,
        )
        self.decoders = decoders or {"argmax": None}  # name -> decoder (builder.build_decoders)
        self.beam_subset = cfg.beam_subset
        self.time_budget_s = cfg.time_budget_s
        self._elapsed_before = 0.0  # seconds trained before this process started (a resumed run)
        self._clock_start: float | None = None
        self._budget_spent = False
        self._elapsed_agreed = 0.0  # elapsed_s() as the ranks agreed on it at the last check

        self.step = 0  # optimiser steps done
        self.epoch = 0  # epochs completed
        self.epoch_batches = 0  # batches done inside the current epoch (non-zero after an interruption)
        self.data_epoch, self.data_batch = 0, 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.not_improved = 0
        self.skipped_steps = 0  # optimiser steps skipped for non-finite loss/gradients (read from the runner)
        self.load_failures = 0  # files replaced at load time
        self._stop_signal = None
        self._warned_infeasible = False
        self.callbacks = list(callbacks)
        # modules scheduled by the optimiser step (SpecAugment's start_step / ramp_steps)
        self._step_scheduled = [m for m in self.raw_model.modules() if callable(getattr(m, "set_train_step", None))]

    # ---- checkpoints ------------------------------------------------------------------
    def state(self, rng_states: list) -> dict[str, Any]:
        return {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "scaler": self.runner.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "epoch_batches": self.epoch_batches,
            "data_epoch": self.data_epoch,
            "data_batch": self.data_batch,
            "monitor_best": self.best,
            "not_improved": self.not_improved,
            "elapsed_s": self.elapsed_s(),
            "config": self.spec.config,
            "text_encoder": self.text_encoder.state(),
            "rng": rng_states[0],
            "rng_per_rank": rng_states,
            **self._stream_state(),
        }

    def _stream_state(self) -> dict[str, Any]:
        """A streamed training split's plan (seed, processes, workers, shards), checked when a run resumes."""
        sampler = epoch_sampler(self.train_loader)
        return {"data_stream": sampler.state_dict()} if hasattr(sampler, "state_dict") else {}

    def save(self, name: str) -> Path:
        """Called on every rank (the RNG states of all ranks are gathered); rank 0 writes."""
        return self.checkpoints.write(self.state, name)

    def resume(self, path: str | os.PathLike) -> None:
        state = load_checkpoint(path)
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.runner.scaler.load_state_dict(state["scaler"])
        for key in ("step", "epoch", "epoch_batches", "data_epoch", "data_batch", "not_improved"):
            setattr(self, key, state[key])
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self._resume_schedule(state["lr_scheduler"])
        self.best = state["monitor_best"]
        self._elapsed_before = float(state.get("elapsed_s", 0.0))  # absent from older checkpoints
        sampler = epoch_sampler(self.train_loader)
        if "data_stream" in state and hasattr(sampler, "check_resume"):
            sampler.check_resume(state["data_stream"])
        per_rank = state.get("rng_per_rank") or []
        set_rng_state(per_rank[self.dist.rank] if len(per_rank) == self.dist.world_size else state["rng"])
        logger.info("resumed from %s: epoch %d, step %d", path, self.epoch, self.step)

    def _resume_schedule(self, saved: dict[str, Any]) -> None:
        """The saved schedule, unless the run's length changed (``trainer.epochs`` or ``len_epoch`` raised
        on resume): a schedule planned for the whole run (OneCycleLR, WarmupLR's decay) is then rebuilt for
        the new number of steps and continued at the current step, at the rate the new plan has there."""
        planned, now = saved.get("total_steps"), getattr(self.lr_scheduler, "total_steps", None)
        if planned is None or now is None or planned == now:
            self.lr_scheduler.load_state_dict(saved)
            return
        continue_schedule(self.lr_scheduler, self.step)
        logger.warning(
            "the learning-rate schedule was planned for %d steps and this run now takes %d: rebuilt for "
            "%d steps and continued at step %d (learning rate %.3g)",
            planned,
            now,
            now,
            self.step,
            self.optimizer.param_groups[0]["lr"],
        )

    # ---- data -------------------------------------------------------------------------
    def _train_stream(self) -> Iterator[dict]:
        """Endless batches; (data_epoch, data_batch) says where, so a resume continues exactly."""
        sampler = epoch_sampler(self.train_loader)
        base_seed = self.spec.seed
        while True:
            sampler.set_epoch(self.data_epoch, self.data_batch)
            self.train_loader.generator.manual_seed(base_seed + self.data_epoch)  # worker seeds per data epoch
            for batch in self.train_loader:
                self.data_batch += 1
                yield batch
            if self.data_batch == 0:  # a whole pass without a batch: the next would be the same
                raise ConfigError(
                    f"the training loader gave no batch in a whole pass (data epoch "
                    f"{self.data_epoch}, {len(self.train_loader.dataset)} utterances); "
                    f"see builder.check_batches"
                )
            self.data_epoch, self.data_batch = self.data_epoch + 1, 0

    # ---- signals ----------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stop_signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        logger.warning(
            "received %s: finishing this step, saving a checkpoint, then stopping", signal.Signals(signum).name
        )

    # ---- training ---------------------------------------------------------------------
    def train(self) -> None:
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._train()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)

    def _train(self) -> None:
        self._clock_start = self._clock()
        self._announce_time_budget()
        self._place_schedule()
        stream = self._train_stream()
        while self.epoch < self.epochs:
            if self._check_time_budget():
                logger.info(
                    "the time budget of %.0f s is spent: not starting epoch %d", self.time_budget_s, self.epoch + 1
                )
                break
            epoch = self.epoch + 1
            logs = self._train_epoch(epoch, stream)
            if logs is None:  # interrupted
                path = self.save(INTERRUPTED)
                logger.warning("stopped by signal; resume with: python train.py -r %s", path)
                return
            cut_short = self._budget_spent and self.epoch_batches < self.len_epoch
            if cut_short:
                logger.info(
                    "the time budget of %.0f s is spent at step %d: epoch %d ends after %d of %d batches",
                    self.time_budget_s,
                    self.step,
                    epoch,
                    self.epoch_batches,
                    self.len_epoch,
                )
            for split, loader in self.eval_loaders.items():
                logs.update(self.evaluate(split, loader))
            self.writer.log_scalars(self.step, "epoch", {"epoch": epoch, **logs})
            for k, v in logs.items():
                logger.info("    %-24s %s", k, f"{v:.4f}" if isinstance(v, float) else v)
            self.epoch, self.epoch_batches = epoch, 0
            improved = self._update_monitor(logs)
            if epoch % self.save_period == 0 or epoch == self.epochs or self._budget_spent:
                self.checkpoints.write_periodic(self.state, epoch)
            if improved:
                self.save(BEST)
            if cut_short:
                break
            if self.not_improved >= self.early_stop:
                logger.info("%s did not improve for %d epochs: early stop", self.monitor_key, self.not_improved)
                break
        self._report_skips()

    def _report_skips(self) -> None:
        if self.skipped_steps:
            logger.warning("%d optimiser steps were skipped for non-finite loss or gradients", self.skipped_steps)
        if self.runner.oom_batches:
            logger.warning("%d batches were skipped for running out of device memory", self.runner.oom_batches)
        if self.load_failures:
            logger.warning("%d audio files failed to load and were replaced by the next file", self.load_failures)

    def _update_monitor(self, logs: Mapping[str, float]) -> bool:
        if self.mode == "off":
            return False
        if self.monitor_key not in logs:
            raise ConfigError(
                f"trainer.monitor names {self.monitor_key!r}, which is not logged; logged: {', '.join(sorted(logs))}"
            )
        value = logs[self.monitor_key]
        improved = value < self.best if self.mode == "min" else value > self.best
        if improved:
            self.best, self.not_improved = value, 0
        else:
            self.not_improved += 1
        return improved

    def _train_epoch(self, epoch: int, stream: Iterator[dict]) -> dict[str, float] | None:
        """One epoch of ``len_epoch`` batches. The host never waits for the device between logging steps:
        losses, skip counts and the gradient norm stay device tensors until a logging step reads them."""
        self.model.train()
        window, whole = TrainWindow(self.device), TrainWindow(self.device)  # since the last log; the epoch
        bar = tqdm(
            total=self.len_epoch,
            initial=self.epoch_batches,
            desc=f"epoch {epoch}/{self.epochs}",
            leave=False,
            dynamic_ncols=True,
        )
        step_loss_ok = torch.ones((), dtype=torch.bool, device=self.device)  # every loss of the step was finite
        while self.epoch_batches < self.len_epoch:
            if self.epoch_batches % self.accum == 0:  # before a step begins
                if self._stop_requested():
                    bar.close()
                    return None
                if self._budget_spent:
                    break
                for module in self._step_scheduled:
                    module.set_train_step(self.step)
            t0 = time.perf_counter()
            batch = next(stream)
            fetched = time.perf_counter() - t0
            audio_seconds = batch_samples(batch) / self.sample_rate  # from the host's own numbers
            batch = move_batch(batch, self.device)
            window.add_batch(audio_seconds, time.perf_counter() - t0)
            self._notify("on_batch", batch, fetched)
            self._count_load_failures(batch)
            outputs, loss = self._forward_backward(batch, sync=(self.epoch_batches + 1) % self.accum == 0)
            if loss is not None:
                finite = torch.isfinite(loss)
                step_loss_ok = step_loss_ok & finite  # a non-finite loss spoils the whole accumulated step
                window.add_loss(loss, finite)
                whole.add_loss(loss, finite)
            if outputs is not None and "text_encoded" in batch:
                infeasible = ctc_infeasible(
                    batch["text_encoded"], batch["text_encoded_length"], outputs["log_probs_length"]
                )
                window.add_infeasible(infeasible)
            self.epoch_batches += 1
            bar.update(1)
            if self.epoch_batches % self.accum == 0:
                grad_norm = self._optimizer_step(step_loss_ok)
                self._notify("on_step_end")
                step_loss_ok = torch.ones((), dtype=torch.bool, device=self.device)
                if self.step % self.log_step == 0:
                    self._check_skips()
                    logs = window.reduce(self.dist.world_size)
                    self._warn_infeasible(logs.pop("infeasible"), logs.pop("utterances"))
                    mean_loss = logs.pop("loss")
                    self._log_train(epoch, batch, outputs, {"loss": mean_loss, "grad_norm": float(grad_norm), **logs})
                    bar.set_postfix(loss=f"{mean_loss:.3f}")
                    window.reset()
        bar.close()
        self._check_skips()
        return whole.epoch_loss()

    def _warn_infeasible(self, infeasible: float, utterances: float) -> None:
        """Once per run: utterances whose transcripts need more output frames than the model gives."""
        if infeasible and not self._warned_infeasible:
            self._warned_infeasible = True
            logger.warning(
                "%d of the %d utterances trained on since the last log step have more tokens (plus one blank "
                "between repeated tokens) than the model has output frames: CTC cannot align them and their "
                "loss is dropped (zero_infinity). With %s's time reduction use a sub-word text encoder "
                "(python -m hw_asr.tools.train_sentencepiece) or less subsampling; ctc_infeasible_share in the "
                "train logs follows it",
                int(infeasible),
                int(utterances),
                type(self.raw_model).__name__,
            )

    def _stop_requested(self) -> bool:
        """A signal asked to stop (on any rank, under torchrun)."""
        stop = self._stop_signal is not None
        return any_rank(stop, self.device) if self.dist.enabled else stop

    def _count_load_failures(self, batch: Mapping[str, Any]) -> None:
        failures = batch.get("load_failures") or []
        self.load_failures += len(failures)

    def _forward_backward(
        self, batch: Mapping, sync: bool = True
    ) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
        """Forward and backward of one batch (:meth:`StepRunner.forward_backward`)."""
        return self.runner.forward_backward(batch, sync)

    def _optimizer_step(self, loss_ok: torch.Tensor) -> torch.Tensor:
        """The optimiser step (:meth:`StepRunner.optimizer_step`); returns the gradient norm (a device tensor)."""
        grad_norm = self.runner.optimizer_step(loss_ok)
        self.step += 1
        if self.time_budget_s is not None:
            self._check_time_budget()
            self._follow_time_budget()
        return grad_norm

    # ---- time budget ------------------------------------------------------------------
    def elapsed_s(self) -> float:
        """Wall-clock seconds this run has trained, evaluations included, over all its resumes."""
        if self._clock_start is None:
            return self._elapsed_before
        return self._elapsed_before + self._clock() - self._clock_start

    def _planned_steps(self) -> int | None:
        """The steps the schedule is planned for, when it has such a plan (OneCycleLR, WarmupLR with a decay)."""
        return getattr(self.lr_scheduler, "total_steps", None) if self.lr_scheduler is not None else None

    def _announce_time_budget(self) -> None:
        if self.time_budget_s is None:
            return
        planned = self._planned_steps()
        follows = (
            f"the learning-rate schedule ({planned} steps) keeps up with the clock"
            if planned
            else "the learning-rate schedule has no planned length and follows the steps"
        )
        logger.info(
            "time budget %.0f s (%.0f s already trained): %s; the run stops with an evaluation and a checkpoint "
            "when the budget is spent",
            self.time_budget_s,
            self._elapsed_before,
            follows,
        )

    def _check_time_budget(self) -> bool:
        """Whether ``trainer.time_budget_s`` is spent (ranks agree on the mean of their clocks), also kept in
        ``_budget_spent``; False without a budget."""
        if self.time_budget_s is None:
            return False
        elapsed = self.elapsed_s()
        if self.dist.enabled:
            elapsed = all_reduce_sum([elapsed], self.device)[0] / self.dist.world_size
        self._elapsed_agreed = elapsed
        self._budget_spent = elapsed >= self.time_budget_s
        return self._budget_spent

    def _place_schedule(self) -> None:
        """At the start of training: a planned schedule at the later of the steps done and the share of the
        time budget spent. Without a budget that is the step (the position a normal run has anyway); a run
        resumed with a larger budget goes back to its share of the new budget."""
        planned = self._planned_steps()
        if not planned:
            return
        position = self.step
        if self.time_budget_s is not None:
            self._check_time_budget()
            position = max(position, self._budget_position(planned))
        if position != self.lr_scheduler.last_epoch:
            continue_schedule(self.lr_scheduler, position)

    def _budget_position(self, planned: int) -> int:
        """The schedule's position for the share of the budget spent; at most ``planned - 1``, the position of
        a plan's last step (OneCycleLR's rate rises again past it)."""
        return min(planned - 1, int(self._elapsed_agreed / self.time_budget_s * planned))

    def _follow_time_budget(self) -> None:
        """Move a schedule planned for ``total_steps`` on to the share of the time budget spent when that
        share is ahead of its own position, so that a machine slower than planned still reaches the end of
        the warm-up and the decay when the budget ends."""
        planned = self._planned_steps()
        if not planned:
            return
        target = self._budget_position(planned)
        if target > self.lr_scheduler.last_epoch:
            continue_schedule(self.lr_scheduler, target)

    def _check_skips(self) -> None:
        """Read the device's skip counters (at logging steps and epoch ends): warn about the skipped steps
        and stop the run after ``max_nonfinite_steps`` in a row."""
        skips, longest = self.runner.read_skips()
        if skips:
            logger.warning("%d optimiser step(s) up to step %d skipped: non-finite loss or gradient", skips, self.step)
            self.skipped_steps += skips
        if self.max_nonfinite_steps and longest >= self.max_nonfinite_steps:
            path = self.save("checkpoint-nonfinite.pth")
            raise NonFiniteLossError(
                f"{longest} optimiser steps in a row had a non-finite loss or gradient "
                f"(up to step {self.step}); the weights are those of the last good step, saved in {path}. "
                f"Lower the learning rate, clip gradients (trainer.grad_norm_clip) or check the data, then "
                f"resume with: python train.py -r {path}"
            )

    def _notify(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            hook = getattr(callback, event, None)
            if hook is not None:
                hook(self, *args)

    def _log_train(
        self, epoch: int, batch: Mapping[str, Any], outputs: Mapping | None, window: Mapping[str, float]
    ) -> None:
        if not self.dist.is_main:
            return
        media = self._log_train_window(epoch, batch, outputs, window)
        self._notify("on_log", media)

    def _log_train_window(
        self, epoch: int, batch: Mapping[str, Any], outputs: Mapping | None, window: Mapping[str, float]
    ) -> bool:
        """Log a training window; returns whether media (spectrogram, audio, predictions) went too."""
        if outputs is None:  # the logged batch was skipped (out of memory)
            self.writer.log_scalars(self.step, "train", {**window, "epoch": epoch})
            return False
        hyps = self.text_encoder.ctc_greedy(outputs["log_probs"].detach(), outputs["log_probs_length"])
        for m in self.metrics:
            if m.decoder == "argmax":
                m.reset()
                m.update(batch["text"], hyps)
        values = {
            **window,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch": epoch,
            **{m.name: m.result() for m in self.metrics if m.decoder == "argmax"},
        }
        self.writer.log_scalars(self.step, "train", values)
        metrics_text = " ".join(f"{m.name}={m.result():.3f}" for m in self.metrics if m.decoder == "argmax")
        logger.info(
            "epoch %d step %d: loss %.4f grad_norm %.2f lr %.2e %s %.2f batch/s %.1f audio-s/s data-wait %.0f%%",
            epoch,
            self.step,
            window["loss"],
            window["grad_norm"],
            values["lr"],
            metrics_text,
            window["batches_per_s"],
            window["audio_s_per_s"],
            100 * window["data_wait_share"],
        )
        if self.writer.media and self.media_step and self.step // self.media_step != self._media_window:
            self._media_window = self.step // self.media_step  # the first log step of every media_step window
            with torch.no_grad():
                feats, _ = self.raw_model.features(batch["audio"][:1], batch["audio_length"][:1])
            self.writer.log_spectrogram(self.step, "train", feats[0])
            self.writer.log_audio(
                self.step, "train", batch["audio"][0, : batch["audio_length"][0]], self.sample_rate, f"step{self.step}"
            )
            self.writer.log_predictions(
                self.step,
                "train",
                [
                    {"target": t, "prediction": h, "WER": calc_wer(t, h), "CER": calc_cer(t, h)}
                    for t, h in list(zip(batch["text"], hyps))[: self.max_predictions]
                ],
            )
            return True
        return False

    def _log_alignment(self, split: str, batch: Mapping[str, Any], outputs: Mapping, text: str) -> None:
        """The first utterance of the evaluation: its spectrogram with the greedy words at their aligned times."""
        words = align_batch(self.raw_model, batch["audio_length"], outputs, [text], self.text_encoder, self.sample_rate)
        audio = batch["audio"][0, : int(batch["audio_length"][0])].float().cpu()
        figure = alignment_figure(
            audio, self.sample_rate, words[0], title=f"greedy: {text}", reference=batch["text"][0]
        )
        self.writer.log_figure(self.step, split, "alignment", figure)

    def evaluate(self, split: str, loader: DataLoader) -> dict[str, float]:
        """Loss and every metric over the whole split (corpus-level, not per-batch averages)."""
        for m in self.metrics:
            m.reset()
        rows: list[dict] = []
        pictured = False

        def on_batch(batch: dict, outputs: dict | None, hyps: dict[str, list]) -> None:
            nonlocal pictured
            if not pictured and outputs is not None and self.writer.media:
                self._log_alignment(split, batch, outputs, hyps["argmax"][0])
                pictured = True
            if len(rows) < self.max_predictions:
                rows.extend(
                    [
                        {
                            "target": t,
                            **{f"pred_{d}": hyps[d][i] for d in self.decoders},
                            "WER": calc_wer(t, hyps["argmax"][i]),
                            "CER": calc_cer(t, hyps["argmax"][i]),
                        }
                        for i, t in enumerate(batch["text"])
                    ][: self.max_predictions - len(rows)]
                )

        tally = score_split(
            self.raw_model,
            loader,
            self.text_encoder,
            self.decoders,
            self.device,
            self.metrics,
            amp=self.runner.amp,
            criterion=self.criterion,
            desc=f"eval {split}",
            beam_subset=self.beam_subset,
            on_batch=on_batch,
        )
        sums = all_reduce_sum(
            [tally.loss_sum, tally.loss_batches, len(tally.skipped), *[x for m in self.metrics for x in m.sums()]],
            self.device,
        )
        total_loss, n_batches, skipped = sums[0], sums[1], int(sums[2])
        for i, m in enumerate(self.metrics):
            m.load_sums(sums[3 + 2 * i : 5 + 2 * i])
        if skipped and self.dist.is_main:
            logger.warning("%s: %d file(s) could not be read and were left out of the metrics", split, skipped)
        self.writer.log_predictions(self.step, split, rows)
        if self.dist.is_main:
            for r in rows[:3]:
                logger.info("  [%s] target: %s\n  [%s]   pred: %s", split, r["target"], split, r["pred_argmax"])
        logs = {f"{split}_loss": total_loss / max(n_batches, 1)}
        logs.update({f"{split}_{m.name}": m.result() for m in self.metrics})
        self.model.train()
        return logs
