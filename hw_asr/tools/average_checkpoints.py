"""Average the weights of several checkpoints of one run (icefall's ``--avg``, ESPnet's ``valid.acc.ave``).

    python -m hw_asr.tools.average_checkpoints checkpoints/<run> --last 5 [-o averaged.pth]
    python -m hw_asr.tools.average_checkpoints checkpoints/<run> --best 5 [--monitor "min val_CER (argmax)"]
    python -m hw_asr.tools.average_checkpoints a.pth b.pth c.pth -o averaged.pth

``--last N``: the N newest periodic checkpoints (``checkpoint-epoch<K>.pth``). ``--best N``: the N
periodic checkpoints whose epochs scored best on the run's monitored metric (``trainer.monitor``, or
``--monitor``), read from the run's ``metrics.jsonl``. A run keeps ``trainer.keep_last`` periodic
checkpoints (3 by default): raise it to average more.

Every floating-point tensor of the model (weights, BatchNorm running statistics) becomes the
element-wise mean; integer tensors (BatchNorm's step counter) are taken from the newest checkpoint.
The result holds the newest checkpoint's config, text encoder, step and epoch and the names it was
averaged from, but no optimiser state: evaluate it with ``test.py -r``, or start a run from its
weights with ``trainer.init_weights``.
"""

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hw_asr.checkpoint import CheckpointError, epoch_checkpoints, load_checkpoint, save_checkpoint
from hw_asr.schema import TrainerConfig, parse_monitor

logger = logging.getLogger(__name__)


def epoch_scores(run_dir: str | os.PathLike, monitor: str) -> tuple[dict[int, float], str]:
    """``{epoch: monitored value}`` from the run's ``metrics.jsonl`` and the direction (min or max)."""
    mode, key = parse_monitor(monitor)
    if mode == "off":
        raise ValueError("--best needs a monitored metric: the run's trainer.monitor is off; give --monitor")
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --best reads the per-epoch metrics from it")
    scores = {}
    for line in path.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if row.get("split") == "epoch" and key in row and row[key] is not None:
            scores[int(row["epoch"])] = row[key]
    return scores, mode


def select(
    run_dir: str | os.PathLike, last: int | None = None, best: int | None = None, monitor: str | None = None
) -> list[Path]:
    """The checkpoint paths ``--last``/``--best`` name, oldest first."""
    found = epoch_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoint-epoch<K>.pth files to average")
    n = last or best
    if last:
        epochs = sorted(found)[-n:]
    else:
        if monitor is None:
            config = load_checkpoint(found[max(found)])["config"]
            monitor = TrainerConfig.from_dict(config["trainer"]).monitor
        scores, mode = epoch_scores(run_dir, monitor)
        scored = [e for e in found if e in scores]
        if not scored:
            raise ValueError(f"{run_dir}: no kept checkpoint's epoch has a score for {monitor!r} in metrics.jsonl")
        epochs = sorted(sorted(scored, key=lambda e: scores[e], reverse=mode == "max")[:n])
    if len(epochs) < n:
        logger.warning(
            "%s keeps %d periodic checkpoint(s), fewer than the %d asked for: averaging %d (raise trainer.keep_last)",
            run_dir,
            len(epochs),
            n,
            len(epochs),
        )
    return [found[e] for e in epochs]


def average(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The averaged checkpoint of ``paths`` (oldest first; the last one is the newest)."""
    if not paths:
        raise ValueError("no checkpoints to average")
    states = [load_checkpoint(p) for p in paths]
    newest = states[-1]
    keys = list(newest["model"])
    for path, state in zip(paths, states):
        if list(state["model"]) != keys or any(state["model"][k].shape != newest["model"][k].shape for k in keys):
            raise CheckpointError(f"{path}: its weights do not match {paths[-1]}'s (another model?)")
    model = {}
    for k in keys:
        tensor = newest["model"][k]
        if tensor.is_floating_point():
            model[k] = torch.stack([s["model"][k].double() for s in states]).mean(0).to(tensor.dtype)
        else:  # counters: the newest
            model[k] = tensor.clone()
    return {
        "model": model,
        "config": newest["config"],
        "text_encoder": newest["text_encoder"],
        "step": newest["step"],
        "epoch": newest["epoch"],
        "averaged_from": [str(p) for p in paths],
    }


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="a run folder (with --last or --best), or checkpoint files")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--last", type=int, help="average the N newest periodic checkpoints of the run")
    which.add_argument("--best", type=int, help="average the N best-scoring periodic checkpoints of the run")
    parser.add_argument("--monitor", help='e.g. "min val_CER (argmax)" (default: the run\'s trainer.monitor)')
    parser.add_argument("-o", "--output", help="where to write (default: <run>/averaged-last<N>.pth or -best<N>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.last or args.best:
            if len(args.paths) != 1 or not Path(args.paths[0]).is_dir():
                raise ValueError("--last and --best take one run folder")
            if (args.last or args.best) < 1:
                raise ValueError("--last/--best must be at least 1")
            paths = select(args.paths[0], args.last, args.best, args.monitor)
            name = f"averaged-{'last' if args.last else 'best'}{args.last or args.best}.pth"
            output = Path(args.output or Path(args.paths[0]) / name)
        else:
            paths = [Path(p) for p in args.paths]
            if len(paths) < 2 or not args.output:
                raise ValueError("give a run folder with --last/--best, or two or more checkpoint files and -o")
            output = Path(args.output)
        state = average(paths)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    save_checkpoint(state, output)
    print(f"{output}: the mean of {len(paths)} checkpoint(s): {', '.join(p.name for p in paths)}")
    return output


if __name__ == "__main__":
    main()
