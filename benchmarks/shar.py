"""The streamed data path (Lhotse Shar) against loose files: reading speed, start-up at scale, torchrun.

    # utterances/s decoded into batches, files vs Shar, with 0, 1 and 2 loader workers
    python benchmarks/shar.py throughput --files .../LibriSpeech/train-clean-5 --shar data/shar/train-clean-5 \\
        [--workers 0 1 2] [--batches 40] [--max-batch-seconds 120]
    # start-up time and host memory of one rank for a 1 M-utterance index: loose-file manifest vs Shar index
    python benchmarks/shar.py startup --manifest <a real manifest> --utterances 1000000 --work-dir /tmp/startup
    # 2 processes under torchrun from Shar: disjoint utterances, equal batch counts, resume mid-epoch
    python benchmarks/shar.py torchrun --shar data/shar/train-clean-5 --out /tmp/ddp [--epochs 2 --len-epoch 6
        --stop-at-step 4] [key=value ...]

``throughput`` builds each loader as training does (``LengthBucketSampler`` over the dataset's index,
``StreamBucketSampler`` over the shards, the same ``max_batch_seconds``), skips the first batch (worker
start-up) and times the next ``--batches``. ``startup`` makes the large index from a real one: the
manifest's rows repeated (the audio files hard-linked under new names, so that each row is a file of its
own) and, for Shar, one real shard's two files hard-linked as every shard of the index; each start-up
runs in a fresh process, which reports its wall time and the growth of its resident memory. A loose-file
dataset starts twice, first reading every file's header (the index is then cached), then from the cache.
``torchrun`` trains a small model on 2 CPU processes (gloo), once straight and once stopped by a signal
at ``--stop-at-step`` then resumed, recording the utterances of every batch of every rank (``record``,
the entry point each rank runs), and compares.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


# ---- throughput ------------------------------------------------------------------------
def loose_dataset(path, encoder):
    from hw_asr.datasets import LibrispeechDataset, ManifestDataset

    path = Path(path)
    if path.is_dir():
        return LibrispeechDataset(
            part=path.name, data_dir=str(path.parent.parent), download=False, text_encoder=encoder
        )
    return ManifestDataset(manifest_path=str(path), text_encoder=encoder)


def time_loader(loader, batches):
    """(utterances/s, audio-s/s) over ``batches`` batches after the first."""
    iterator = iter(loader)
    next(iterator)
    utts, audio, start = 0, 0.0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        utts += batch["audio"].shape[0]
        audio += batch["num_samples"] / 16000
    wall = time.perf_counter() - start
    return utts / wall, audio / wall


def throughput(args):
    import functools

    from torch.utils.data import DataLoader

    from hw_asr.batch_sampler import LengthBucketSampler, StreamBucketSampler
    from hw_asr.collate_fn import collate_fn
    from hw_asr.datasets import SharDataset
    from hw_asr.text_encoder import CTCCharTextEncoder

    encoder = CTCCharTextEncoder("en")
    files = loose_dataset(args.files, encoder)
    shar = SharDataset(args.shar, text_encoder=encoder)
    rows = []
    for workers in args.workers:
        sampler = LengthBucketSampler(files, max_batch_seconds=args.max_batch_seconds, seed=0)
        loader = DataLoader(files, batch_sampler=sampler, collate_fn=collate_fn, num_workers=workers)
        f_utt, f_audio = time_loader(loader, args.batches)
        stream = StreamBucketSampler(shar, max_batch_seconds=args.max_batch_seconds, seed=0)
        stream.num_workers = workers
        collate = functools.partial(collate_fn, sample_rate=16000)
        loader = DataLoader(stream, batch_size=None, collate_fn=collate, num_workers=workers)
        s_utt, s_audio = time_loader(loader, args.batches)
        rows.append((workers, f_utt, s_utt, f_audio, s_audio))
        print(f"workers {workers}: files {f_utt:.1f} utt/s, Shar {s_utt:.1f} utt/s", flush=True)
    print("\n| loader workers | files: utt/s | Shar: utt/s | Shar / files | files: audio-s/s | Shar: audio-s/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w, fu, su, fa, sa in rows:
        print(f"| {w} | {fu:.1f} | {su:.1f} | {su / fu:.2f} | {fa:.0f} | {sa:.0f} |")
    return rows


# ---- start-up at scale -----------------------------------------------------------------
def startup_one(kind, path):
    """One start-up in this (fresh) process: build the dataset and the batch plan; report JSON."""
    from hw_asr.batch_sampler import LengthBucketSampler, StreamBucketSampler
    from hw_asr.datasets import ManifestDataset, SharDataset

    before, start = rss_mb(), time.perf_counter()
    if kind == "shar":
        dataset = SharDataset(path)
        batches = len(StreamBucketSampler(dataset, max_batch_seconds=600, world_size=8, rank=0))
        utterances = dataset.utterances
    else:
        dataset = ManifestDataset(manifest_path=path)
        batches = len(LengthBucketSampler(dataset, max_batch_seconds=600, world_size=8, rank=0))
        utterances = len(dataset)
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "rss_growth_mb": rss_mb() - before,
                "utterances": utterances,
                "batches_per_rank": batches,
            }
        )
    )


def make_large_index(manifest, utterances, work_dir, shard_size=1000):
    """A manifest of ``utterances`` rows (hard links of the real files) and a Shar index of as many
    utterances in shards of ``shard_size`` (hard links of one real shard)."""
    from hw_asr.datasets import ManifestDataset
    from hw_asr.tools import export_shar

    work_dir = Path(work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    (work_dir / "audio").mkdir(parents=True)
    rows = ManifestDataset(manifest_path=str(manifest), use_cache=False).index
    lines = []
    for i in range(utterances):
        row = rows[i % len(rows)]
        target = work_dir / "audio" / f"{i:07d}{Path(row['path']).suffix}"
        os.link(row["path"], target)
        entry = {"audio_filepath": f"audio/{target.name}", "text": row["text"], "duration": row["duration"]}
        lines.append(json.dumps(entry))
    (work_dir / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    one = work_dir / "one_shard"
    export_shar.export(rows[:shard_size], one, shard_size=shard_size)
    shard = json.loads((one / "shar_index.json").read_text())["shards"][0]
    shar = work_dir / "shar"
    shar.mkdir()
    shards = []
    per_utt = shard["seconds"] / shard["utterances"]
    for n in range(-(-utterances // shard_size)):
        count = min(shard_size, utterances - n * shard_size)
        os.link(one / shard["cuts"], shar / f"cuts.{n:06d}.jsonl.gz")
        os.link(one / shard["recording"], shar / f"recording.{n:06d}.tar")
        shards.append(
            {
                "cuts": f"cuts.{n:06d}.jsonl.gz",
                "recording": f"recording.{n:06d}.tar",
                "utterances": count,
                "seconds": per_utt * count,
                "max_seconds": shard["max_seconds"],
            }
        )
    export_shar.write_index(shar, shards, sample_rate=16000, audio_format="flac")
    return work_dir / "manifest.jsonl", shar


def startup(args):
    manifest, shar = make_large_index(args.manifest, args.utterances, args.work_dir)
    env = {**os.environ, "HW_ASR_CACHE": str(Path(args.work_dir) / "cache")}
    results = {}
    for label, kind, path in (
        ("loose files, first start (headers read, index cached)", "files", manifest),
        ("loose files, cached index", "files", manifest),
        ("Shar index", "shar", shar),
    ):
        out = subprocess.run(
            [sys.executable, __file__, "startup-one", kind, str(path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
        print(label, results[label], flush=True)
    print(f"\n{args.utterances} utterances, one rank of 8 (max_batch_seconds 600):\n")
    print("| start-up | wall (s) | resident memory growth (MB) | batches per rank |")
    print("|---|---:|---:|---:|")
    for label, r in results.items():
        print(f"| {label} | {r['seconds']:.2f} | {r['rss_growth_mb']:.0f} | {r['batches_per_rank']} |")
    return results


# ---- torchrun ----------------------------------------------------------------------------
def record(argv):
    """Run ``train.py``'s main with every batch's utterances appended to ``<out>/rank<R>.jsonl``;
    ``--stop-at-step K`` sends this process the stop signal's handling after optimiser step K."""
    import train
    from hw_asr.trainer.trainer import Trainer

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-at-step", type=int, default=0)
    args, rest = parser.parse_known_args(argv)
    rank = int(os.environ.get("RANK", 0))
    log = Path(args.out) / f"rank{rank}.jsonl"
    count, step = Trainer._count_load_failures, Trainer._optimizer_step

    def recorded(self, batch):
        with open(log, "a") as f:
            f.write(json.dumps({"step": self.step, "utterances": batch["audio_path"]}) + "\n")
        return count(self, batch)

    def stopping(self, finite):
        out = step(self, finite)
        if self.step == args.stop_at_step:
            self._on_signal(signal.SIGINT, None)
        return out

    Trainer._count_load_failures = recorded
    if args.stop_at_step:
        Trainer._optimizer_step = stopping
    train.main(rest)


def torchrun_record(out, train_args, stop_at_step=0, timeout=600):
    Path(out).mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        "record",
        "--out",
        str(out),
        "--stop-at-step",
        str(stop_at_step),
        *train_args,
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def read_batches(out, rank):
    path = Path(out) / f"rank{rank}.jsonl"
    return [json.loads(line)["utterances"] for line in path.read_text().splitlines()]


def data_epoch_batches(shar, train_args):
    """Each rank's batches per data epoch under the run's sampler settings (2 processes)."""
    from hw_asr.batch_sampler import StreamBucketSampler
    from hw_asr.config import apply_overrides, load_config
    from hw_asr.datasets import SharDataset

    config = apply_overrides(load_config(train_args[1]), [a for a in train_args[2:] if "=" in a])
    sampler_args = config["data"]["train"]["batch_sampler"]["args"]
    dataset = SharDataset(str(shar))
    return [len(StreamBucketSampler(dataset, **sampler_args, rank=r, world_size=2)) for r in (0, 1)]


def torchrun_check(shar, out, overrides=(), epochs=2, len_epoch=6, stop_at_step=4):
    """Straight and stopped-then-resumed 2-process runs from ``shar``; returns the comparison."""
    out = Path(out)
    base = [
        "-c",
        str(REPO / "configs" / "one_batch_test.json"),
        f'data.train.datasets=[{{"type": "SharDataset", "args": {{"shar_dir": "{Path(shar).resolve()}"}}}}]',
        'data.train.batch_sampler={"type": "StreamBucketSampler", "args": {"max_batch_seconds": 30}}',
        "data.train.num_workers=1",
        'arch={"type": "BaselineModel", "args": {"hidden": 32, "frontend": {"n_mels": 32}}}',
        'lr_scheduler={"type": "WarmupLR", "args": {"warmup_steps": 2, "decay": "constant"}}',
        f"trainer.epochs={epochs}",
        f"trainer.len_epoch={len_epoch}",
        "trainer.grad_accum_steps=1",
        "trainer.monitor=off",
        "trainer.visualize=null",
        "trainer.log_step=2",
        *overrides,
    ]
    straight, stopped = out / "straight", out / "stopped"
    torchrun_record(straight, [*base, f"trainer.save_dir={straight}", "trainer.run_name=run"])
    torchrun_record(stopped, [*base, f"trainer.save_dir={stopped}", "trainer.run_name=run"], stop_at_step)
    checkpoint = stopped / "run" / "checkpoint-interrupted.pth"
    if not checkpoint.is_file():
        raise RuntimeError(f"the stopped run wrote no {checkpoint}")
    torchrun_record(stopped, ["-r", str(checkpoint)])
    ranks = [read_batches(straight, r) for r in (0, 1)]
    resumed = [read_batches(stopped, r) for r in (0, 1)]
    seen = [{u for b in r for u in b} for r in ranks]
    result = {
        "batches_per_rank": [len(r) for r in ranks],
        "batches_per_data_epoch": data_epoch_batches(shar, base),
        "utterances_per_rank": [len(s) for s in seen],
        "utterances_on_both_ranks": len(seen[0] & seen[1]),
        "resumed_equals_straight": resumed == ranks,
        "stopped_at_step": stop_at_step,
    }
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "record":
        return record(argv[1:])
    if argv and argv[0] == "startup-one":
        return startup_one(argv[1], argv[2])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--files", required=True, help="a LibriSpeech part folder or a manifest")
    t.add_argument("--shar", required=True, help="the same utterances as a Shar folder")
    t.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--batches", type=int, default=40)
    t.add_argument("--max-batch-seconds", type=float, default=120)
    s = sub.add_parser("startup")
    s.add_argument("--manifest", required=True, help="a real manifest whose rows are repeated")
    s.add_argument("--utterances", type=int, default=1_000_000)
    s.add_argument("--work-dir", required=True, help="a scratch folder (emptied)")
    d = sub.add_parser("torchrun")
    d.add_argument("--shar", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--epochs", type=int, default=2)
    d.add_argument("--len-epoch", type=int, default=6)
    d.add_argument("--stop-at-step", type=int, default=4)
    d.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "throughput":
        return throughput(args)
    if args.command == "startup":
        return startup(args)
    result = torchrun_check(args.shar, args.out, args.overrides, args.epochs, args.len_epoch, args.stop_at_step)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
