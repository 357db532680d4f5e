"""Train a CTC speech recogniser from a JSON config.

python train.py -c configs/one_batch_test.json [key.path=value ...]
python train.py -r checkpoints/<run>/checkpoint-epoch10.pth [key.path=value ...]
torchrun --nproc_per_node=N train.py -c ...
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hw_asr.builder import validate_config
from hw_asr.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from hw_asr.config import ConfigError, apply_overrides, load_config
from hw_asr.datasets.download import DownloadError
from hw_asr.run import build_training
from hw_asr.schema import RunSpec
from hw_asr.trainer.distributed import barrier, init_distributed
from hw_asr.trainer.distributed import cleanup as cleanup_distributed
from hw_asr.trainer.trainer import NonFiniteLossError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
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


def check_resume(resume_path: Path, resume_state: dict[str, Any], spec: RunSpec) -> None:
    """A finished run resumes only with more epochs; an averaged checkpoint (no optimiser state) does not
    resume at all. Said before anything is written."""
    if "averaged_from" in resume_state:
        raise ConfigError(
            f"{resume_path} is an average of {len(resume_state['averaged_from'])} checkpoints and holds no "
            f"optimiser state: evaluate it with test.py -r, or start a new run from its weights with "
            f"trainer.init_weights={resume_path}"
        )
    done, epochs = resume_state.get("epoch", 0), spec.trainer.epochs
    if done >= epochs:
        raise ConfigError(
            f"{resume_path}: the run already finished at epoch {done}; raise trainer.epochs to "
            f"continue (e.g. python train.py -r {resume_path} trainer.epochs={done + 10})"
        )


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    resume_path = find_checkpoint(args.resume) if args.resume else None
    resume_state = load_checkpoint(resume_path) if resume_path else None
    config = load_config(args.config) if args.config else resume_state["config"]
    config = apply_overrides(config, args.overrides)
    if resume_state:
        config["trainer"].pop("init_weights", None)  # the checkpoint already holds the weights
    spec = validate_config(config)  # the config checked and resolved once
    if resume_state:
        check_resume(resume_path, resume_state, spec)
    dist_info = init_distributed(args.device or spec.trainer.device)
    try:
        run_dir = build_training(spec, dist_info, resume_path, resume_state).run()
        barrier()  # no rank tears the group down while another still uses it (a gloo rank aborted at exit)
        return run_dir
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, CheckpointError, DownloadError, FileNotFoundError, NonFiniteLossError) as e:
        sys.exit(f"error: {e}")
