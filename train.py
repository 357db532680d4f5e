"""Train a CTC speech recogniser from a JSON config.

python train.py -c configs/one_batch_test.json [key.path=value ...]
python train.py -r checkpoints/<run>/checkpoint-epoch10.pth [key.path=value ...]
torchrun --nproc_per_node=N train.py -c ...
"""

import argparse
import logging
import random
import sys
from datetime import datetime
from pathlib import Path

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
    eval_splits,
    validate_config,
)
from hw_asr.checkpoint import CheckpointError, check_weights_fit, find_checkpoint, load_checkpoint
from hw_asr.config import ConfigError, apply_overrides, get_path, load_config, write_config
from hw_asr.datasets.download import DownloadError
from hw_asr.inference import allow_tf32
from hw_asr.logger import Writer, attach_log_file, setup_logging
from hw_asr.schema import TrainerConfig, seed
from hw_asr.text_encoder import text_encoder_from_state
from hw_asr.trainer.distributed import barrier, broadcast_object, init_distributed, sync_batchnorm
from hw_asr.trainer.distributed import cleanup as cleanup_distributed
from hw_asr.trainer.host_memory import configure as configure_host_memory
from hw_asr.trainer.trainer import NonFiniteLossError, Trainer, load_matching_weights

logger = logging.getLogger("train")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def new_run_dir(config, tcfg):
    """``<save_dir>/<name>_<MMDD_HHMMSS>``, or ``<save_dir>/<trainer.run_name>`` when that is set."""
    save_dir, run_name = Path(tcfg.save_dir), tcfg.run_name
    if run_name:
        run_dir = save_dir / run_name
        if list(run_dir.glob("*.pth")):
            raise ConfigError(
                f"run folder {run_dir} already holds checkpoints: resume it with "
                f"-r {run_dir}/<checkpoint>.pth or choose another trainer.run_name"
            )
        return run_dir
    name = config.get("name", "run")
    run_dir = save_dir / f"{name}_{datetime.now():%m%d_%H%M%S}"
    suffix = 1
    while run_dir.exists():
        run_dir = save_dir / f"{name}_{datetime.now():%m%d_%H%M%S}_{suffix}"
        suffix += 1
    return run_dir


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", help="config JSON (with -r: replaces the checkpoint's config)")
    parser.add_argument(
        "-r",
        "--resume",
        help="checkpoint to resume from, or a run folder (its newest checkpoint); the run folder is reused",
    )
    parser.add_argument("-d", "--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument("overrides", nargs="*", help="dotted overrides: trainer.epochs=5 optimizer.args.lr=1e-3")
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("give a config (-c) or a checkpoint to resume (-r)")
    return args


def check_resume(resume_path, resume_state, config):
    """A finished run resumes only with more epochs; an averaged checkpoint (no optimiser state) does not
    resume at all. Said before anything is written."""
    if "averaged_from" in resume_state:
        raise ConfigError(
            f"{resume_path} is an average of {len(resume_state['averaged_from'])} checkpoints and holds no "
            f"optimiser state: evaluate it with test.py -r, or start a new run from its weights with "
            f"trainer.init_weights={resume_path}"
        )
    done, epochs = resume_state.get("epoch", 0), config["trainer"]["epochs"]
    if done >= epochs:
        raise ConfigError(
            f"{resume_path}: the run already finished at epoch {done}; raise trainer.epochs to "
            f"continue (e.g. python train.py -r {resume_path} trainer.epochs={done + 10})"
        )


def check_schedule_length(lr_scheduler, total_steps):
    """OneCycleLR stops the run with an error one step past its ``total_steps``: a schedule given a
    total shorter than the run is refused at start-up instead of hours into it."""
    planned = getattr(lr_scheduler, "total_steps", None)
    if isinstance(lr_scheduler, torch.optim.lr_scheduler.OneCycleLR) and planned < total_steps:
        raise ConfigError(
            f"lr_scheduler.args sets OneCycleLR's total_steps to {planned}, but the run takes "
            f"{total_steps} optimiser steps (trainer.epochs x len_epoch / grad_accum_steps); remove "
            f"total_steps (and epochs) from lr_scheduler.args to plan it for the run's length"
        )


def main(argv=None):
    args = parse_args(argv)
    resume_path = find_checkpoint(args.resume) if args.resume else None
    resume_state = load_checkpoint(resume_path) if resume_path else None
    config = load_config(args.config) if args.config else resume_state["config"]
    config = apply_overrides(config, args.overrides)
    if resume_state:
        config["trainer"].pop("init_weights", None)  # the checkpoint already holds the weights
    validate_config(config)
    if resume_state:
        check_resume(resume_path, resume_state, config)
    tcfg = TrainerConfig.from_dict(config["trainer"])
    dist_info = init_distributed(args.device or tcfg.device)
    try:
        run_dir = _train(args, config, tcfg, resume_path, resume_state, dist_info)
        barrier()  # no rank tears the group down while another still uses it (a gloo rank aborted at exit)
        return run_dir
    finally:
        cleanup_distributed()


def _train(args, config, tcfg, resume_path, resume_state, dist_info):
    device = dist_info.device
    configure_host_memory(tcfg.keep_freed_memory, device)  # before any big allocation
    # the same seed on every rank would give every rank the same augmentation draws;
    # model weights are the same anyway (DDP copies rank 0's at start)
    seed_everything(seed(config) + dist_info.rank)
    # Everything that can fail on the config, the checkpoint or the data happens before the run folder
    # exists (or, on resume, before its config.json is rewritten); the log is held until then.
    setup_logging(None, level=logging.INFO if dist_info.is_main else logging.WARNING, hold=dist_info.is_main)
    run_dir = resume_path.parent if resume_path else None
    if run_dir is None:  # its name only: the folder is made once the run can start
        run_dir = broadcast_object(new_run_dir(config, tcfg) if dist_info.is_main else None)
    encoder = text_encoder_from_state(resume_state["text_encoder"]) if resume_state else build_text_encoder(config)
    # the model before the data (neither draws from the global random streams while it is built)
    model = build_model(config, n_tokens=len(encoder))
    if resume_state:
        trained_as, here = (get_path(c, "arch.type", "?") for c in (resume_state["config"], config))
        check_weights_fit(
            model,
            resume_state["model"],
            resume_path,
            f"It was trained as {trained_as}, this config builds {here}. Resume with the "
            f"checkpoint's own config (no -c), or start a new run from its weights: "
            f"trainer.init_weights={resume_path}",
        )

    train_set = build_dataset(config, "train", encoder)
    train_loader = build_dataloader(config, "train", train_set, seed=seed(config))
    check_batches(config, "train", train_loader, dist_info.world_size)
    eval_loaders = {s: build_dataloader(config, s, build_dataset(config, s, encoder)) for s in eval_splits(config)}
    total_steps = tcfg.total_steps(len(train_loader))
    model = model.to(device)
    if tcfg.sync_batchnorm:
        model = sync_batchnorm(model, dist_info)  # before the optimiser is built
    optimizer = build_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    lr_scheduler = build_lr_scheduler(config, optimizer, total_steps)
    check_schedule_length(lr_scheduler, total_steps)

    if dist_info.is_main:
        attach_log_file(run_dir)
        write_config(config, run_dir / "config.json")
    logger.info("run folder: %s (%d process%s)", run_dir, dist_info.world_size, "es" * (dist_info.world_size > 1))

    logger.info("%s", model)
    if tcfg.init_weights and not resume_state:
        load_matching_weights(model, tcfg.init_weights, arch=get_path(config, "arch.type", None))
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
        config,
        visualize=tcfg.visualize,
        project_name=tcfg.project_name,
        enabled=dist_info.is_main,
    )
    metrics = build_metrics(config)
    trainer = Trainer(
        model,
        build_loss(config),
        metrics,
        optimizer,
        lr_scheduler,
        encoder,
        config,
        device,
        train_loader,
        eval_loaders,
        run_dir,
        writer,
        dist_info,
        decoders=build_decoders(config, encoder, {m.decoder for m in metrics}),
    )
    if resume_path:
        trainer.resume(resume_path)
    try:
        trainer.train()
    finally:
        writer.close()
    return run_dir


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, CheckpointError, DownloadError, FileNotFoundError, NonFiniteLossError) as e:
        sys.exit(f"error: {e}")
