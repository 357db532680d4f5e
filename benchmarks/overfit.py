"""How fast the one-batch overfit reaches a target WER.

    python benchmarks/overfit.py [--config configs/one_batch_test.json] [--every 5] [--target 0.05]

Trains with validation every ``--every`` optimiser steps and reports the first step
whose validation greedy WER is below ``--target``, with the wall time since the start
of training (validation and checkpoint writes included, as a user sees it).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/one_batch_test.json")
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--target", type=float, default=0.05)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = train.main(
            [
                "-c",
                args.config,
                f"trainer.save_dir={tmp}",
                f"trainer.len_epoch={args.every}",
                f"trainer.log_step={args.every}",
                f"trainer.epochs={args.max_steps // args.every}",
                "trainer.early_stop=3",
                "trainer.save_period=100000",
                "trainer.visualize=null",
            ]
        )
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    start = rows[0]["time"] - args.every / rows[0]["batches_per_s"]
    epochs = [r for r in rows if r["split"] == "epoch"]
    hit = next((r for r in epochs if r["val_WER (argmax)"] < args.target), None)
    print("\n| step | val WER | val CER | wall s |\n|---:|---:|---:|---:|")
    for r in epochs:
        print(f"| {r['step']} | {r['val_WER (argmax)']:.3f} | {r['val_CER (argmax)']:.3f} | {r['time'] - start:.1f} |")
    if hit is None:
        print(f"\nval WER did not reach {args.target} within {args.max_steps} steps")
    else:
        print(
            f"\nval WER < {args.target} at step {hit['step']}, {hit['time'] - start:.1f} s after the start of training"
        )


if __name__ == "__main__":
    main()
