"""Framework overhead and input-pipeline speed, measured side by side in one run.

    python benchmarks/pipeline.py -c configs/deepspeech2_mini_librispeech.json [--steps 12] [key=value ...]

1. Overhead: the wall time of ``--steps`` full training steps through the Trainer
   (DataLoader with the config's workers, collate, frontend, forward, backward,
   clipping, optimiser, scheduler, logging every ``log_step`` to metrics.jsonl and
   comet offline, progress bar) against the bare loop -- forward, loss, backward,
   optimiser step -- over the very same batches already collated in memory.
   Both are timed from the end of the first step to the end of the last (the first
   step warms up kernels, and the loader's worker start-up happens once per epoch).
   The two runs alternate (bare, full, bare, full, ...) and each figure is the faster.
   Both loops record the shape of every batch they train on; the run stops with an
   error if they differ (a ratio over different batches measures nothing), or if any
   step's loss or gradient was not finite (the Trainer skips such a step's update, the
   bare loop does not). Each loop
   also reports its CPU share -- process CPU time / (wall time x threads) -- because
   another process competing for the cores slows whichever loop it overlaps; the run
   warns when the shares differ.
2. Loader: utterances per second the DataLoader delivers on its own, against the
   utterances per second the bare training loop consumes.
"""
import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_asr.builder import (build_dataloader, build_dataset, build_loss, build_lr_scheduler,  # noqa: E402
                            build_metrics, build_model, build_optimizer, build_text_encoder, resolve_num_workers)
from hw_asr.config import apply_overrides, load_config  # noqa: E402
from hw_asr.logger import Writer  # noqa: E402
from hw_asr.trainer.inference import move_batch  # noqa: E402
from hw_asr.trainer.trainer import Trainer  # noqa: E402


def fresh(config, encoder):
    torch.manual_seed(0)
    model = build_model(config, n_tokens=len(encoder))
    optimizer = build_optimizer(config, model.parameters())
    return model, optimizer, build_lr_scheduler(config, optimizer, 1000)


class Timing:
    """Wall and process-CPU stamps at the end of each step, and the batch shapes trained on."""

    def __init__(self):
        self.wall, self.cpu, self.shapes = [], [], []
        self.non_finite = 0  # steps whose loss or gradients were not finite (the Trainer skips their update)

    def stamp(self):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    @property
    def seconds(self):
        """Steps 2..N: the first step warms up allocators and kernels in both loops."""
        return self.wall[-1] - self.wall[0]

    @property
    def cpu_share(self):
        return (self.cpu[-1] - self.cpu[0]) / max(self.seconds * torch.get_num_threads(), 1e-9)


def bare_run(config, encoder, batches, clip):
    model, optimizer, _ = fresh(config, encoder)
    criterion = build_loss(config)
    model.train()
    timing = Timing()
    for batch in batches:
        timing.shapes.append(tuple(batch["audio"].shape))
        out = model(**batch)
        loss = criterion(**batch, **out)["loss"]
        timing.non_finite += not bool(torch.isfinite(loss))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        del out, loss  # as in the Trainer: nothing from this step is alive during the next
        timing.stamp()
    return timing


def full_run(config, encoder, dataset, steps, tmp):
    cfg = {**config, "trainer": {**config["trainer"], "epochs": 1, "len_epoch": steps, "grad_accum_steps": 1,
                                 "monitor": "off", "save_period": 10 ** 9}}
    model, optimizer, scheduler = fresh(cfg, encoder)
    loader = build_dataloader(cfg, "train", dataset, seed=0)
    writer = Writer(tmp, cfg, visualize=cfg["trainer"].get("visualize", "comet"))
    trainer = Trainer(model, build_loss(cfg), build_metrics(cfg), optimizer, scheduler, encoder, cfg,
                      torch.device("cpu"), loader, {}, tmp, writer)
    trainer.save = lambda name: None  # checkpoint writes are not part of a step
    timing = Timing()
    step, forward_backward = trainer._optimizer_step, trainer._forward_backward

    def stamped(*a, **k):
        out = step(*a, **k)
        timing.stamp()
        return out

    def recorded(batch, *a, **k):
        timing.shapes.append(tuple(batch["audio"].shape))
        return forward_backward(batch, *a, **k)

    trainer._optimizer_step, trainer._forward_backward = stamped, recorded
    trainer.train()
    writer.close()
    timing.non_finite = trainer.skipped_steps
    # from the end of step 1 to the end of step N: everything between two optimiser steps
    # (next batch from the loader, forward, backward, step, logging, progress bar) is counted
    return timing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2, help="alternating bare/full pairs; the faster of each")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = apply_overrides(load_config(args.config), args.overrides)
    encoder = build_text_encoder(config)
    dataset = build_dataset(config, "train", encoder)
    loader = build_dataloader(config, "train", dataset, seed=0)

    start = time.perf_counter()
    batches, data_epoch = [], 0
    while len(batches) < args.steps:  # the batches the Trainer's stream will see, epoch after epoch
        loader.batch_sampler.set_epoch(data_epoch)
        loader.generator.manual_seed(config.get("seed", 42) + data_epoch)
        for batch in loader:
            batches.append(move_batch(batch, torch.device("cpu")))
            if len(batches) == args.steps:
                break
        data_epoch += 1
    load_time = time.perf_counter() - start
    n_utts = sum(len(b["text"]) for b in batches)

    clip = config["trainer"].get("grad_norm_clip")
    bare, full = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            bare.append(bare_run(config, encoder, batches, clip))
            full.append(full_run(config, encoder, dataset, args.steps, Path(tmp)))
    for timing in bare + full:
        if timing.shapes != bare[0].shapes:
            sys.exit(f"the bare loop and the Trainer trained on different batches "
                     f"({bare[0].shapes} vs {timing.shapes}): the ratio would compare different work")
    non_finite = [t.non_finite for t in bare + full]
    if any(non_finite):
        sys.exit(f"steps with a non-finite loss or gradient (bare, full per run: {non_finite}): the Trainer skips "
                 f"their backward/update while the bare loop does not, so the ratio would compare different work; "
                 f"choose a configuration that trains cleanly (e.g. a lower learning rate)")
    bare_best, full_best = min(bare, key=lambda t: t.seconds), min(full, key=lambda t: t.seconds)
    b, f = bare_best.seconds, full_best.seconds
    if min(bare_best.cpu_share, full_best.cpu_share) < 0.8:
        print(f"WARNING: the loops got {bare_best.cpu_share:.0%} / {full_best.cpu_share:.0%} of "
              f"{torch.get_num_threads()} cores: the machine is busy, the timings are not the model's",
              file=sys.stderr)
    elif abs(bare_best.cpu_share - full_best.cpu_share) > 0.1:
        print(f"WARNING: CPU share differs between the loops (bare {bare_best.cpu_share:.2f}, "
              f"full {full_best.cpu_share:.2f}): another process was probably competing for the cores; "
              f"rerun on an idle machine", file=sys.stderr)
    workers = resolve_num_workers(config["data"]["train"].get("num_workers", 0), "data.train.num_workers")
    print(f"\n{args.config}: {args.steps} steps, {n_utts} utterances, "
          f"{sum(x['audio_length'].sum().item() for x in batches) / 16000:.0f} s of audio, "
          f"{torch.get_num_threads()} threads, {workers} loader worker(s)")
    print("| measure | value |\n|---|---:|")
    print(f"| bare forward/backward/optimiser, s per step | {b / (args.steps - 1):.3f} |")
    print(f"| full Trainer step, s per step | {f / (args.steps - 1):.3f} |")
    print(f"| **overhead ratio full / bare** | **{f / b:.3f}** |")
    print(f"| CPU share bare / full | {bare_best.cpu_share:.2f} / {full_best.cpu_share:.2f} |")
    print(f"| all runs, s per step, bare | {' '.join(f'{t.seconds / (args.steps - 1):.3f}' for t in bare)} |")
    print(f"| all runs, s per step, full | {' '.join(f'{t.seconds / (args.steps - 1):.3f}' for t in full)} |")
    print(f"| loader alone, utterances/s | {n_utts / load_time:.1f} |")
    consumed = n_utts * (args.steps - 1) / args.steps / b
    print(f"| model consumes, utterances/s | {consumed:.1f} |")
    print(f"| loader / model | {n_utts / load_time / consumed:.1f}x |")


if __name__ == "__main__":
    main()
