"""Framework overhead and input-pipeline speed, measured side by side in one run.

    python benchmarks/pipeline.py -c configs/deepspeech2_mini_librispeech.json [--steps N] [--repeats R] [key=value ...]

1. Overhead: the wall time of ``--steps`` full training steps through the Trainer
   (DataLoader with the config's workers, collate, frontend, forward, backward,
   clipping, optimiser, scheduler, logging every ``log_step`` to metrics.jsonl and
   comet offline, progress bar) against the bare loop -- forward, loss, backward,
   optimiser step -- over the very same batches already collated in memory.
   Both are timed from the end of the first step to the end of the last (the first
   step warms up kernels, and the loader's worker start-up happens once per epoch).
   The two runs alternate (bare, full, bare, full, ...); the headline is the median over
   the pairs of full / bare (a pair's two runs share the machine's state of the moment,
   and this machine's speed drifts by up to 15% between runs); the ratio of the fastest
   runs is printed as well.
   By default a run is ``log_step + 1`` steps, so the timed steps are one logging
   window with its logging step (comet media included when it falls there); the step
   that carries the logging is printed beside the bare loop's time for the same batch,
   with the Trainer's own data-wait share.
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
import resource
import statistics
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
        self.wall, self.cpu, self.faults, self.shapes = [], [], [], []
        self.non_finite = 0  # steps whose loss or gradients were not finite (the Trainer skips their update)
        self.logged, self.media = set(), set()  # optimiser steps (1-based) that logged, and that sent comet media
        self.data_wait = []  # the Trainer's own data-wait share of each logging window

    def stamp(self):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        self.faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

    @property
    def seconds(self):
        """Steps 2..N: the first step warms up allocators and kernels in both loops."""
        return self.wall[-1] - self.wall[0]

    @property
    def faults_per_step(self):
        """Minor page faults (memory the kernel had to map and zero) per timed step."""
        return (self.faults[-1] - self.faults[0]) / max(len(self.faults) - 1, 1)

    @property
    def step_seconds(self):
        """Wall time of steps 2..N, each from the end of the previous step."""
        return [b - a for a, b in zip(self.wall, self.wall[1:])]

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

    log_train, log_spectrogram = trainer._log_train, writer.log_spectrogram

    def log_step(epoch, batch, outputs, window):  # runs after step k's stamp, so it is timed with step k + 1
        timing.logged.add(len(timing.wall))
        timing.data_wait.append(window["data_wait_share"])
        return log_train(epoch, batch, outputs, window)

    def media(*a, **k):
        timing.media.add(len(timing.wall))
        return log_spectrogram(*a, **k)

    trainer._optimizer_step, trainer._forward_backward = stamped, recorded
    trainer._log_train, writer.log_spectrogram = log_step, media
    trainer.train()
    writer.close()
    timing.non_finite = trainer.skipped_steps
    # from the end of step 1 to the end of step N: everything between two optimiser steps
    # (next batch from the loader, forward, backward, step, logging, progress bar) is counted
    return timing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per run (default: log_step + 1, so that the timed steps 2..N are "
                             "one logging window, its logging step included)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating bare/full pairs")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = apply_overrides(load_config(args.config), args.overrides)
    log_every = config["trainer"].get("log_step", 50)
    if args.steps is None:
        args.steps = log_every + 1
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is a warm-up and is not timed)")
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
    timed_logs = sorted(k for k in full_best.logged if k < args.steps)  # step k's logging is timed with step k + 1
    if min(bare_best.cpu_share, full_best.cpu_share) < 0.8:
        print(f"WARNING: the loops got {bare_best.cpu_share:.0%} / {full_best.cpu_share:.0%} of "
              f"{torch.get_num_threads()} cores: the machine is busy, the timings are not the model's",
              file=sys.stderr)
    elif abs(bare_best.cpu_share - full_best.cpu_share) > 0.1:
        print(f"WARNING: CPU share differs between the loops (bare {bare_best.cpu_share:.2f}, "
              f"full {full_best.cpu_share:.2f}): another process was probably competing for the cores; "
              f"rerun on an idle machine", file=sys.stderr)
    if not timed_logs:
        print(f"WARNING: no logging step falls in the timed steps 2..{args.steps} (log_step {log_every}): "
              f"the ratio leaves logging out; use --steps {log_every + 1}", file=sys.stderr)
    workers = resolve_num_workers(config["data"]["train"].get("num_workers", 0), "data.train.num_workers")
    print(f"\n{args.config}: {args.steps} steps, {n_utts} utterances, "
          f"{sum(x['audio_length'].sum().item() for x in batches) / 16000:.0f} s of audio, "
          f"{torch.get_num_threads()} threads, {workers} loader worker(s)")
    print("| measure | value |\n|---|---:|")
    print(f"| bare forward/backward/optimiser, s per step | {b / (args.steps - 1):.3f} |")
    print(f"| full Trainer step, s per step | {f / (args.steps - 1):.3f} |")
    pairs = [x.seconds / y.seconds for y, x in zip(bare, full)]
    pair_median = statistics.median(pairs)
    print(f"| overhead ratio, fastest full / fastest bare | {f / b:.3f} |")
    print(f"| full / bare of each alternating pair | {' '.join(f'{r:.3f}' for r in pairs)} |")
    print(f"| **overhead ratio, median of the pairs** | **{pair_median:.3f}** |")
    print(f"| CPU share bare / full | {bare_best.cpu_share:.2f} / {full_best.cpu_share:.2f} |")
    print(f"| minor page faults per step, bare / full | {bare_best.faults_per_step:.0f} / "
          f"{full_best.faults_per_step:.0f} |")
    print(f"| all runs, s per step, bare | {' '.join(f'{t.seconds / (args.steps - 1):.3f}' for t in bare)} |")
    print(f"| all runs, s per step, full | {' '.join(f'{t.seconds / (args.steps - 1):.3f}' for t in full)} |")
    full_steps, bare_steps = full_best.step_seconds, bare_best.step_seconds  # the same batch at each index
    for k in timed_logs:
        print(f"| step {k + 1} (with step {k}'s logging{' and comet media' if k in full_best.media else ''}), "
              f"s full / bare | {full_steps[k - 1]:.3f} / {bare_steps[k - 1]:.3f} |")
    others = [i for i in range(len(full_steps)) if i + 1 not in timed_logs]
    if others:
        print(f"| steps without logging, full / bare | "
              f"{sum(full_steps[i] for i in others) / sum(bare_steps[i] for i in others):.3f} |")
    if full_best.data_wait:
        print(f"| time waiting for the loader (the Trainer's data-wait share, steps 1..{min(full_best.logged)}) | "
              f"{full_best.data_wait[0]:.1%} |")
    print(f"| loader alone, utterances/s | {n_utts / load_time:.1f} |")
    consumed = n_utts * (args.steps - 1) / args.steps / b
    print(f"| model consumes, utterances/s | {consumed:.1f} |")
    print(f"| loader / model | {n_utts / load_time / consumed:.1f}x |")
    return {"ratio": f / b, "pair_median": pair_median, "bare_s": b / (args.steps - 1), "full_s": f / (args.steps - 1),
            "timed_logs": timed_logs, "timed_media": [k for k in timed_logs if k in full_best.media],
            "data_wait_share": full_best.data_wait[0] if full_best.data_wait else None}


if __name__ == "__main__":
    main()
