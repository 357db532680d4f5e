"""Framework overhead and input-pipeline speed, measured side by side in one run.

    python benchmarks/pipeline.py -c configs/deepspeech2_mini_librispeech.json [--steps N] [--repeats R]
        [--interleave steps|runs] [key=value ...]

1. Overhead: the wall time of ``--steps`` full training steps through the Trainer
   (DataLoader with the config's workers, collate, frontend, forward, backward,
   clipping, optimiser, scheduler, logging every ``log_step`` to metrics.jsonl and
   comet offline, progress bar) against the bare loop -- forward, loss, backward,
   optimiser step -- over the very same batches already collated in memory.
   Steps 2..N are timed (the first warms up kernels and allocators, and the loader's
   worker start-up happens once per epoch).
   By default the two loops run in lock-step, each on a model of its own: right after
   the Trainer's step k the bare loop trains on batch k, and the Trainer's next step is
   timed from the end of that bare step. Two steps a few seconds apart share the
   machine's state of the moment; this machine's speed drifts by up to 25% between runs
   a minute apart, which swamps a few per cent of overhead when whole runs alternate.
   The bare loop keeps a random stream of its own, so the Trainer's is untouched.
   With loader workers, which would prefetch during the bare steps and compete with
   them, ``--interleave runs`` alternates whole runs instead (bare, full, bare, ...).
   ``--repeats`` pairs are measured; the headline is the median of their full / bare.
   By default a run is ``log_step + 1`` steps, so the timed steps are one logging
   window with its logging step (comet media included when it falls there); the step
   that carries the logging is printed beside the bare loop's time for the same batch,
   with the time the Trainer waits for the loader.
   Both loops record the shape of every batch they train on; the run stops with an
   error if they differ (a ratio over different batches measures nothing), or if any
   step's loss or gradient was not finite (the Trainer skips such a step's update, the
   bare loop does not). Each loop also reports its CPU share -- process CPU time /
   (wall time x threads) -- because another process competing for the cores slows
   whichever loop it overlaps; the run warns when the shares differ.
   Both loops run under the allocator setting train.py would use, ``trainer.keep_freed_memory``
   (on for the CPU unless the config or an override says false; its own gain is measured by
   ``benchmarks/host_memory.py``), so the ratio is the overhead a user's training pays.
2. Loader: utterances per second the DataLoader delivers on its own, against the
   utterances per second the bare training loop consumes.
"""

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_asr.builder import (  # noqa: E402
    build_dataloader,
    build_dataset,
    build_loss,
    build_lr_scheduler,
    build_model,
    build_optimizer,
    build_text_encoder,
    resolve_num_workers,
    validate_config,
)
from hw_asr.config import apply_overrides, get_path, load_config  # noqa: E402
from hw_asr.inference import move_batch  # noqa: E402
from hw_asr.run import build_training  # noqa: E402
from hw_asr.trainer.distributed import DistInfo  # noqa: E402
from hw_asr.trainer.host_memory import configure as configure_host_memory  # noqa: E402

SEED = 0  # both loops: the model's initialisation, the batches' order and the loader's worker seeds


def fresh(config, encoder):
    torch.manual_seed(SEED)
    model = build_model(config, n_tokens=len(encoder))
    optimizer = build_optimizer(config, model.parameters())
    return model, optimizer, build_lr_scheduler(config, optimizer, 1000)


def snapshot():
    """Wall time, process CPU time and minor page faults (memory the kernel had to map and zero)."""
    return time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Timing:
    """Where each step ended (``stamp``), and the batch shapes trained on.

    A step runs from the end of the previous one, unless ``restart`` moved its start
    later: in lock-step the other loop's step runs in between and is not counted.
    """

    def __init__(self):
        self.starts, self.ends, self.shapes = [], [], []
        self.non_finite = 0  # steps whose loss or gradients were not finite (the Trainer skips their update)
        self.logged, self.media = set(), set()  # optimiser steps (1-based) that logged, and that sent comet media
        self.wait = []  # seconds the Trainer waited for each batch

    def stamp(self):
        now = snapshot()
        self.ends.append(now)
        self.starts.append(now)

    def restart(self):
        if self.starts:
            self.starts[-1] = snapshot()

    @property
    def steps_done(self):
        return len(self.ends)

    def _intervals(self, field):
        """Steps 2..N: the first step warms up allocators and kernels in both loops."""
        return [end[field] - start[field] for start, end in zip(self.starts, self.ends[1:])]

    @property
    def step_seconds(self):
        return self._intervals(0)

    @property
    def seconds(self):
        return sum(self.step_seconds)

    @property
    def faults_per_step(self):
        return sum(self._intervals(2)) / max(self.steps_done - 1, 1)

    @property
    def data_wait_share(self):
        return sum(self.wait[1:]) / max(self.seconds, 1e-9)

    @property
    def cpu_share(self):
        return sum(self._intervals(1)) / max(self.seconds * torch.get_num_threads(), 1e-9)


class BareLoop:
    """Forward, loss, backward, clipping and optimiser step over batches already in memory."""

    def __init__(self, config, encoder, clip):
        self.model, self.optimizer, _ = fresh(config, encoder)
        self.criterion, self.clip, self.timing = build_loss(config), clip, Timing()
        self.model.train()

    def step(self, batch):
        self.timing.restart()
        self.timing.shapes.append(tuple(batch["audio"].shape))
        out = self.model(**batch)
        loss = self.criterion(**batch, **out)["loss"]
        self.timing.non_finite += not bool(torch.isfinite(loss))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        del out, loss  # as in the Trainer: nothing from this step is alive during the next
        self.timing.stamp()


def bare_run(config, encoder, batches, clip):
    bare = BareLoop(config, encoder, clip)
    for batch in batches:
        bare.step(batch)
    return bare.timing


def full_run(config, steps, tmp, bare=None, batches=None):
    """The Trainer's timing; with ``bare``, that loop trains on ``batches[k - 1]`` right after
    the Trainer's step k (lock-step), its own RNG stream apart, and its time not counted."""
    cfg = {
        **config,
        "data": {"train": config["data"]["train"]},  # no evaluation after the timed steps
        "trainer": {
            **config["trainer"],
            "epochs": 1,
            "len_epoch": steps,
            "grad_accum_steps": 1,
            "monitor": "off",
            "save_period": 10**9,
            "save_dir": str(tmp),
            "run_name": None,
        },
    }
    timing = Timing()

    class Recorder:
        """The Trainer's hooks: batch shapes and waits, a stamp after each optimiser step (then, in
        lock-step, the bare loop's step on the same batch), and which steps logged and sent media."""

        def on_batch(self, trainer, batch, fetch_seconds):  # step k's wait is within step k
            timing.shapes.append(tuple(batch["audio"].shape))
            timing.wait.append(fetch_seconds)

        def on_step_end(self, trainer):
            nonlocal bare_rng
            timing.stamp()
            if bare is not None:
                with torch.random.fork_rng(devices=[]):  # the Trainer's random stream stays its own
                    torch.set_rng_state(bare_rng)
                    bare.step(batches[timing.steps_done - 1])
                    bare_rng = torch.get_rng_state()
                timing.restart()

        def on_log(self, trainer, media):  # runs after step k's stamp, so it is timed with step k + 1
            timing.logged.add(timing.steps_done)
            if media:
                timing.media.add(timing.steps_done)

    # assembled as train.py assembles a run (its model seeded as the bare loop's)
    training = build_training(
        validate_config({**cfg, "seed": SEED}), DistInfo(device=torch.device("cpu")), callbacks=[Recorder()]
    )
    logging.getLogger().setLevel(logging.WARNING)  # build_training logs at INFO
    bare_rng = torch.get_rng_state()
    training.run()  # the checkpoint written at the end comes after the last timed step
    timing.non_finite = training.trainer.skipped_steps
    # from the end of step 1 to the end of step N: everything between two optimiser steps
    # (next batch from the loader, forward, backward, step, logging, progress bar) is counted
    return timing


def collect_batches(config, dataset, steps):
    """The first ``steps`` batches of the Trainer's stream, epoch after epoch, collated in memory."""
    loader = build_dataloader(config, "train", dataset, seed=SEED)
    batches, data_epoch = [], 0
    while len(batches) < steps:
        loader.batch_sampler.set_epoch(data_epoch)
        loader.generator.manual_seed(SEED + data_epoch)
        for batch in loader:
            batches.append(move_batch(batch, torch.device("cpu")))
            if len(batches) == steps:
                break
        data_epoch += 1
    return batches


def run_arms(script, arms, repeats, argv, overrides):
    """Each of ``arms`` in a fresh process (``script *argv --child ARM *overrides``), the arms alternating,
    ``repeats`` rounds; each child prints its figures as a JSON last line with the ``shapes`` it trained on.
    Returns ``{arm: [figures, ...]}``; stops with an error if a child failed or the arms trained on different
    batches (a ratio over different batches measures nothing)."""
    runs = {arm: [] for arm in arms}
    for _ in range(repeats):
        for arm in arms:
            cmd = [sys.executable, str(script), *argv, "--child", arm, *overrides]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"the {arm} arm failed:\n{out.stderr[-2000:]}")
            runs[arm].append(json.loads(out.stdout.strip().splitlines()[-1]))
    if len({json.dumps(r["shapes"]) for arm in arms for r in runs[arm]}) != 1:
        sys.exit("the arms trained on different batches: the ratio would compare different work")
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per run (default: log_step + 1, so that the timed steps 2..N are "
        "one logging window, its logging step included)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="bare/full pairs")
    parser.add_argument(
        "--interleave",
        choices=("steps", "runs"),
        default="steps",
        help="steps (default): one run, the bare loop's step k right after the Trainer's step k; "
        "runs: a bare run, then a Trainer run",
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = apply_overrides(load_config(args.config), args.overrides)
    log_every = config["trainer"].get("log_step", 50)
    if args.steps is None:
        args.steps = log_every + 1
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is a warm-up and is not timed)")
    # as train.py does, before any big allocation; one setting for the whole process, so both loops share it
    kept = configure_host_memory(get_path(config, "trainer.keep_freed_memory", None), torch.device("cpu"))
    encoder = build_text_encoder(config)
    dataset = build_dataset(config, "train", encoder)
    start = time.perf_counter()
    batches = collect_batches(config, dataset, args.steps)
    load_time = time.perf_counter() - start
    n_utts = sum(len(b["text"]) for b in batches)

    clip = config["trainer"].get("grad_norm_clip")
    workers = resolve_num_workers(config["data"]["train"].get("num_workers", 0), "data.train.num_workers")
    if args.interleave == "steps" and workers:
        print(
            f"WARNING: {workers} loader worker(s) prefetch while the lock-step bare steps run and compete with "
            f"them for the cores; --interleave runs keeps the two loops apart",
            file=sys.stderr,
        )
    bare, full = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            if args.interleave == "steps":
                lockstep = BareLoop(config, encoder, clip)
                full.append(full_run(config, args.steps, Path(tmp), lockstep, batches))
                bare.append(lockstep.timing)
            else:
                bare.append(bare_run(config, encoder, batches, clip))
                full.append(full_run(config, args.steps, Path(tmp)))
    for timing in bare + full:
        if timing.shapes != bare[0].shapes:
            sys.exit(
                f"the bare loop and the Trainer trained on different batches "
                f"({bare[0].shapes} vs {timing.shapes}): the ratio would compare different work"
            )
    non_finite = [t.non_finite for t in bare + full]
    if any(non_finite):
        sys.exit(
            f"steps with a non-finite loss or gradient (bare, full per run: {non_finite}): the Trainer skips "
            f"their backward/update while the bare loop does not, so the ratio would compare different work; "
            f"choose a configuration that trains cleanly (e.g. a lower learning rate)"
        )
    bare_best, full_best = min(bare, key=lambda t: t.seconds), min(full, key=lambda t: t.seconds)
    b, f = bare_best.seconds, full_best.seconds
    timed_logs = sorted(k for k in full_best.logged if k < args.steps)  # step k's logging is timed with step k + 1
    if min(bare_best.cpu_share, full_best.cpu_share) < 0.8:
        print(
            f"WARNING: the loops got {bare_best.cpu_share:.0%} / {full_best.cpu_share:.0%} of "
            f"{torch.get_num_threads()} cores: the machine is busy, the timings are not the model's",
            file=sys.stderr,
        )
    elif abs(bare_best.cpu_share - full_best.cpu_share) > 0.1:
        print(
            f"WARNING: CPU share differs between the loops (bare {bare_best.cpu_share:.2f}, "
            f"full {full_best.cpu_share:.2f}): another process was probably competing for the cores; "
            f"rerun on an idle machine",
            file=sys.stderr,
        )
    if not timed_logs:
        print(
            f"WARNING: no logging step falls in the timed steps 2..{args.steps} (log_step {log_every}): "
            f"the ratio leaves logging out; use --steps {log_every + 1}",
            file=sys.stderr,
        )
    print(
        f"\n{args.config}: {args.steps} steps, {n_utts} utterances, "
        f"{sum(x['audio_length'].sum().item() for x in batches) / 16000:.0f} s of audio, "
        f"{torch.get_num_threads()} threads, {workers} loader worker(s), "
        f"{'lock-step' if args.interleave == 'steps' else 'alternating runs'}, "
        f"trainer.keep_freed_memory {'on' if kept else 'off'}"
    )
    print("| measure | value |\n|---|---:|")
    print(f"| bare forward/backward/optimiser, s per step | {b / (args.steps - 1):.3f} |")
    print(f"| full Trainer step, s per step | {f / (args.steps - 1):.3f} |")
    pairs = [x.seconds / y.seconds for y, x in zip(bare, full)]
    pair_median = statistics.median(pairs)
    print(f"| overhead ratio, fastest full / fastest bare | {f / b:.3f} |")
    print(f"| full / bare of each pair | {' '.join(f'{r:.3f}' for r in pairs)} |")
    print(f"| **overhead ratio, median of the pairs** | **{pair_median:.3f}** |")
    print(f"| CPU share bare / full | {bare_best.cpu_share:.2f} / {full_best.cpu_share:.2f} |")
    print(
        f"| minor page faults per step, bare / full | {bare_best.faults_per_step:.0f} / "
        f"{full_best.faults_per_step:.0f} |"
    )
    print(f"| all runs, s per step, bare | {' '.join(f'{t.seconds / (args.steps - 1):.3f}' for t in bare)} |")
    print(f"| all runs, s per step, full | {' '.join(f'{t.seconds / (args.steps - 1):.3f}' for t in full)} |")
    # step level, within each pair (the same batch at each index), median over the pairs
    for k in timed_logs:
        print(
            f"| step {k + 1} (with step {k}'s logging{' and comet media' if k in full_best.media else ''}), "
            f"s full / bare, median of the pairs | {statistics.median(x.step_seconds[k - 1] for x in full):.3f} / "
            f"{statistics.median(y.step_seconds[k - 1] for y in bare):.3f} |"
        )
    others = [i for i in range(args.steps - 1) if i + 1 not in timed_logs]
    if others:
        plain = statistics.median(
            sum(x.step_seconds[i] for i in others) / sum(y.step_seconds[i] for i in others) for y, x in zip(bare, full)
        )
        print(f"| steps without logging, full / bare, median of the pairs | {plain:.3f} |")
    data_wait = statistics.median(x.data_wait_share for x in full)
    print(f"| time the Trainer waits for the loader, share of its steps, median of the runs | {data_wait:.1%} |")
    print(f"| loader alone, utterances/s | {n_utts / load_time:.1f} |")
    consumed = n_utts * (args.steps - 1) / args.steps / b
    print(f"| model consumes, utterances/s | {consumed:.1f} |")
    print(f"| loader / model | {n_utts / load_time / consumed:.1f}x |")
    return {
        "ratio": f / b,
        "pair_median": pair_median,
        "bare_s": b / (args.steps - 1),
        "full_s": f / (args.steps - 1),
        "timed_logs": timed_logs,
        "timed_media": [k for k in timed_logs if k in full_best.media],
        "data_wait_share": data_wait,
        "pairs": pairs,
        "keep_freed_memory": kept,
        "step_seconds": [{"bare": y.step_seconds, "full": x.step_seconds} for y, x in zip(bare, full)],
    }


if __name__ == "__main__":
    main()
