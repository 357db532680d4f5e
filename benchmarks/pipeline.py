"""Framework overhead and input-pipeline speed, measured side by side in one run.

    python benchmarks/pipeline.py -c configs/deepspeech2_mini_librispeech.json [--steps 12] [key=value ...]

1. Overhead: the wall time of ``--steps`` full training steps through the Trainer
   (DataLoader with the config's workers, collate, frontend, forward, backward,
   clipping, optimiser, scheduler, logging every ``log_step`` to metrics.jsonl and
   comet offline, progress bar) against the bare loop -- forward, loss, backward,
   optimiser step -- over the very same batches already collated in memory.
   Both are timed from the end of the first step to the end of the last (the first
   step warms up kernels, and the loader's worker start-up happens once per epoch).
   The two runs alternate (bare, full, bare, full) and each figure is the faster.
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
                            build_metrics, build_model, build_optimizer, build_text_encoder)
from hw_asr.config import apply_overrides, load_config  # noqa: E402
from hw_asr.logger import Writer  # noqa: E402
from hw_asr.trainer.inference import move_batch  # noqa: E402
from hw_asr.trainer.trainer import Trainer  # noqa: E402


def fresh(config, encoder):
    torch.manual_seed(0)
    model = build_model(config, n_tokens=len(encoder))
    optimizer = build_optimizer(config, model.parameters())
    return model, optimizer, build_lr_scheduler(config, optimizer, 1000)


def bare_run(config, encoder, batches, clip):
    """Seconds for steps 2..N (the first step warms up allocators and kernels in both runs)."""
    model, optimizer, _ = fresh(config, encoder)
    criterion = build_loss(config)
    model.train()
    stamps = []
    for batch in batches:
        out = model(**batch)
        loss = criterion(**batch, **out)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        stamps.append(time.perf_counter())
    return stamps[-1] - stamps[0]


def full_run(config, encoder, dataset, steps, tmp):
    cfg = {**config, "trainer": {**config["trainer"], "epochs": 1, "len_epoch": steps, "grad_accum_steps": 1,
                                 "monitor": "off", "save_period": 10 ** 9}}
    model, optimizer, scheduler = fresh(cfg, encoder)
    loader = build_dataloader(cfg, "train", dataset, seed=0)
    writer = Writer(tmp, cfg, visualize=cfg["trainer"].get("visualize", "comet"))
    trainer = Trainer(model, build_loss(cfg), build_metrics(cfg), optimizer, scheduler, encoder, cfg,
                      torch.device("cpu"), loader, {}, tmp, writer)
    trainer.save = lambda name: None  # checkpoint writes are not part of a step
    stamps = []
    step = trainer._optimizer_step

    def stamped(*a, **k):
        out = step(*a, **k)
        stamps.append(time.perf_counter())
        return out

    trainer._optimizer_step = stamped
    trainer.train()
    writer.close()
    # from the end of step 1 to the end of step N: everything between two optimiser steps
    # (next batch from the loader, forward, backward, step, logging, progress bar) is counted
    return stamps[-1] - stamps[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--steps", type=int, default=12)
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
        for _ in range(2):
            bare.append(bare_run(config, encoder, batches, clip))
            full.append(full_run(config, encoder, dataset, args.steps, Path(tmp)))
    b, f = min(bare), min(full)
    workers = config["data"]["train"].get("num_workers", 0)
    print(f"\n{args.config}: {args.steps} steps, {n_utts} utterances, "
          f"{sum(x['audio_length'].sum().item() for x in batches) / 16000:.0f} s of audio, "
          f"{torch.get_num_threads()} threads, {workers} loader worker(s)")
    print("| measure | value |\n|---|---:|")
    print(f"| bare forward/backward/optimiser, s per step | {b / (args.steps - 1):.3f} |")
    print(f"| full Trainer step, s per step | {f / (args.steps - 1):.3f} |")
    print(f"| **overhead ratio full / bare** | **{f / b:.3f}** |")
    print(f"| loader alone, utterances/s | {n_utts / load_time:.1f} |")
    consumed = n_utts * (args.steps - 1) / args.steps / b
    print(f"| model consumes, utterances/s | {consumed:.1f} |")
    print(f"| loader / model | {n_utts / load_time / consumed:.1f}x |")


if __name__ == "__main__":
    main()
