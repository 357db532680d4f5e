"""Assembling a training run from a checked config: the package function that ``train.py`` calls.

``build_training(spec, dist_info, resume_path, resume_state)`` builds the text encoder, model, data,
optimiser, schedule, writer and :class:`~hw_asr.trainer.trainer.Trainer` from a
:class:`~hw_asr.schema.RunSpec` (the config resolved once by ``validate_config``), in the order that keeps
every error on the config, the checkpoint or the data before the run folder exists; ``Training.run()`` trains and closes
the writer. ``train.py`` only parses its arguments, reads the checkpoint it resumes and sets up processes.
"""

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hw_asr.builder import (
    build_dataloader,
    build_dataset,
    build_decoders,
    build_loss,
    build_lr_scheduler,
    build_metrics,
    build_model,
    build_optimizer,
    build_text_encoder,
    check_batches,
    compile_options,
)
from hw_asr.checkpoint import check_weights_fit
from hw_asr.config import ConfigError, get_path, write_config
from hw_asr.inference import allow_tf32
from hw_asr.logger import Writer, attach_log_file, setup_logging
from hw_asr.model.output_prior import ctc_output_prior, set_output_prior
from hw_asr.schema import RunSpec
from hw_asr.text_encoder import text_encoder_from_state
from hw_asr.trainer.checkpoints import load_matching_weights
from hw_asr.trainer.distributed import DistInfo, broadcast_object, sync_batchnorm
from hw_asr.trainer.host_memory import configure as configure_host_memory
from hw_asr.trainer.trainer import Trainer

logger = logging.getLogger("train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def new_run_dir(spec: RunSpec) -> Path:
    """``<save_dir>/<name>_<MMDD_HHMMSS>``, or ``<save_dir>/<trainer.run_name>`` when that is set."""
    save_dir, run_name = Path(spec.trainer.save_dir), spec.trainer.run_name
    if run_name:
        run_dir = save_dir / run_name
        if list(run_dir.glob("*.pth")):
            raise ConfigError(
                f"run folder {run_dir} already holds checkpoints: resume it with "
                f"-r {run_dir}/<checkpoint>.pth or choose another trainer.run_name"
            )
        return run_dir
    name = spec.name
    run_dir = save_dir / f"{name}_{datetime.now():%m%d_%H%M%S}"
    suffix = 1
    while run_dir.exists():
        run_dir = save_dir / f"{name}_{datetime.now():%m%d_%H%M%S}_{suffix}"
        suffix += 1
    return run_dir


def check_schedule_length(lr_scheduler: object | None, total_steps: int) -> None:
    """OneCycleLR stops the run with an error one step past its ``total_steps``: a schedule given a
    total shorter than the run is refused at start-up instead of hours into it."""
    planned = getattr(lr_scheduler, "total_steps", None)
    if isinstance(lr_scheduler, torch.optim.lr_scheduler.OneCycleLR) and planned < total_steps:
        raise ConfigError(
            f"lr_scheduler.args sets OneCycleLR's total_steps to {planned}, but the run takes "
            f"{total_steps} optimiser steps (trainer.epochs x len_epoch / grad_accum_steps); remove "
            f"total_steps (and epochs) from lr_scheduler.args to plan it for the run's length"
        )


@dataclass
class Training:
    """A run ready to start: its Trainer, the Writer it logs to, and its folder."""

    trainer: Trainer
    writer: Writer
    run_dir: Path

    def run(self) -> Path:
        """Train (from the resumed state, if any) and close the writer; returns the run folder."""
        try:
            self.trainer.train()
        finally:
            self.writer.close()
        return self.run_dir


def build_training(
    spec: RunSpec,
    dist_info: DistInfo,
    resume_path: Path | None = None,
    resume_state: dict | None = None,
    callbacks: Iterable[Any] = (),
) -> Training:
    """The run of ``spec`` (a config checked by ``validate_config``) on ``dist_info``'s device, new or
    resumed from ``resume_path`` (``resume_state``: that checkpoint, already read); ``callbacks`` go
    to the Trainer. Logging starts here; the run folder is created once nothing is left to refuse."""
    device, tcfg = dist_info.device, spec.trainer
    configure_host_memory(tcfg.keep_freed_memory, device)  # before any big allocation
    # the same seed on every rank would give every rank the same augmentation draws;
    # model weights are the same anyway (DDP copies rank 0's at start)
    seed_everything(spec.seed + dist_info.rank)
    # Everything that can fail on the config, the checkpoint or the data happens before the run folder
    # exists (or, on resume, before its config.json is rewritten); the log is held until then.
    setup_logging(None, level=logging.INFO if dist_info.is_main else logging.WARNING, hold=dist_info.is_main)
    run_dir = resume_path.parent if resume_path else None
    if run_dir is None:  # its name only: the folder is made once the run can start
        run_dir = broadcast_object(new_run_dir(spec) if dist_info.is_main else None)
    encoder = text_encoder_from_state(resume_state["text_encoder"]) if resume_state else build_text_encoder(spec)
    # the model before the data (neither draws from the global random streams while it is built); an
    # argument value the model refuses is a ConfigError here, before any data is read
    model = build_model(spec, n_tokens=len(encoder))
    if resume_state:
        trained_as, here = get_path(resume_state["config"], "arch.type", "?"), spec.arch.type_name
        check_weights_fit(
            model,
            resume_state["model"],
            resume_path,
            f"It was trained as {trained_as}, this config builds {here}. Resume with the "
            f"checkpoint's own config (no -c), or start a new run from its weights: "
            f"trainer.init_weights={resume_path}",
        )

    train_set = build_dataset(spec, "train", encoder)
    train_loader = build_dataloader(spec, "train", train_set, seed=spec.seed)
    check_batches(spec, "train", train_loader, dist_info.world_size)
    eval_loaders = {s: build_dataloader(spec, s, build_dataset(spec, s, encoder)) for s in spec.eval_splits()}
    total_steps = tcfg.total_steps(len(train_loader))
    # a new run's output bias at the plateau's distribution: before the run folder (its errors are the
    # config's) and before init_weights, whose head (if it fits) wins
    if tcfg.head_prior and not resume_state:
        try:
            set_output_prior(model, ctc_output_prior(model, train_set, encoder, spec.sample_rate))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    model = model.to(device)
    if tcfg.sync_batchnorm:
        model = sync_batchnorm(model, dist_info)  # before the optimiser is built
    optimizer = build_optimizer(spec, [p for p in model.parameters() if p.requires_grad])
    lr_scheduler = build_lr_scheduler(spec, optimizer, total_steps)
    check_schedule_length(lr_scheduler, total_steps)

    if dist_info.is_main:
        attach_log_file(run_dir)
        write_config(spec.config, run_dir / "config.json")
    logger.info("run folder: %s (%d process%s)", run_dir, dist_info.world_size, "es" * (dist_info.world_size > 1))

    logger.info("%s", model)
    if tcfg.init_weights and not resume_state:
        load_matching_weights(model, tcfg.init_weights, arch=spec.arch.type_name)
    if tcfg.tf32 is not None:  # null: torch's default (TF32 convolutions, fp32 matrix products)
        if device.type == "cuda":
            allow_tf32(tcfg.tf32)
        else:
            logger.warning("trainer.tf32 applies to CUDA only; %s computes in plain fp32", device.type)
    if tcfg.compile:
        model.compile_blocks(**compile_options(tcfg.compile))
    if dist_info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    writer = Writer(
        run_dir,
        spec.config,
        visualize=tcfg.visualize,
        project_name=tcfg.project_name,
        enabled=dist_info.is_main,
    )
    metrics = build_metrics(spec)
    trainer = Trainer(
        model,
        build_loss(spec),
        metrics,
        optimizer,
        lr_scheduler,
        encoder,
        spec,
        device,
        train_loader,
        eval_loaders,
        run_dir,
        writer,
        dist_info,
        decoders=build_decoders(spec, encoder, {m.decoder for m in metrics}),
        callbacks=callbacks,
    )
    if resume_path:
        trainer.resume(resume_path)
    return Training(trainer, writer, Path(run_dir))
