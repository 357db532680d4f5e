"""Share of padded frames per batch: length-bucketed vs random batches, on real durations.

    python benchmarks/padding.py [--data-dir ../shared/data/mini-librispeech] [--part train-clean-5]

Both samplers batch the same utterances for the same epochs. Padded share of a batch =
padded samples / (batch size x longest utterance); the table gives the mean over the
batches of 5 epochs, and the share of all computed samples that are padding.
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_asr.batch_sampler import LengthBucketSampler, RandomBatchSampler  # noqa: E402
from hw_asr.datasets import LibrispeechDataset  # noqa: E402
from hw_asr.text_encoder import CTCCharTextEncoder  # noqa: E402


def padding_stats(sampler, durations, epochs=5):
    shares, padded, total, sizes = [], 0.0, 0.0, []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in sampler:
            lengths = [durations[i] for i in batch]
            cost = len(lengths) * max(lengths)
            shares.append(1 - sum(lengths) / cost)
            padded += cost - sum(lengths)
            total += cost
            sizes.append(len(batch))
    return statistics.mean(shares), padded / total, statistics.mean(sizes), len(sizes) / epochs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data/mini-librispeech")
    parser.add_argument("--part", default="train-clean-5")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-batch-seconds", type=float, default=240.0)
    args = parser.parse_args(argv)
    ds = LibrispeechDataset(args.part, data_dir=args.data_dir, text_encoder=CTCCharTextEncoder(), download=False)
    durations = [r["duration"] for r in ds.index]
    print(
        f"{args.part}: {len(durations)} utterances, {min(durations):.1f}-{max(durations):.1f} s, "
        f"mean {statistics.mean(durations):.1f} s\n"
    )
    print(
        "| sampler | mean padded share per batch | padding in all computed audio | mean batch size "
        "| batches per epoch |"
    )
    print("|---|---:|---:|---:|---:|")
    samplers = {
        f"RandomBatchSampler(batch_size={args.batch_size})": RandomBatchSampler(ds, args.batch_size),
        f"LengthBucketSampler(batch_size={args.batch_size})": LengthBucketSampler(ds, batch_size=args.batch_size),
        f"LengthBucketSampler(max_batch_seconds={args.max_batch_seconds:g})": LengthBucketSampler(
            ds, max_batch_seconds=args.max_batch_seconds
        ),
    }
    for name, sampler in samplers.items():
        share, overall, size, n = padding_stats(sampler, durations)
        print(f"| {name} | {100 * share:.1f}% | {100 * overall:.1f}% | {size:.1f} | {n:.1f} |")


if __name__ == "__main__":
    main()
