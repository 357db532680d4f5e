"""Training throughput of a config: audio seconds processed per wall second over one epoch.

    python benchmarks/train_throughput.py -c configs/deepspeech2_mini_librispeech.json [--batches N]

Runs ``--batches`` training batches (default: one full pass over the train split)
with logging once at the end, and reports what the trainer measured over that window:
batches/s, audio seconds per wall second and the share of time spent waiting for data.
Validation is not part of the measured window.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402
from hw_asr.builder import build_dataloader, build_dataset, build_text_encoder  # noqa: E402
from hw_asr.config import apply_overrides, load_config  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    config = apply_overrides(load_config(args.config), args.overrides)
    n = args.batches or len(
        build_dataloader(config, "train", build_dataset(config, "train", build_text_encoder(config)))
    )
    val_limits = [
        f"data.{s}.datasets.{i}.args.limit=1"
        for s in config["data"]
        if s != "train"
        for i in range(len(config["data"][s]["datasets"]))
    ]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = train.main(
            [
                "-c",
                args.config,
                *args.overrides,
                f"trainer.save_dir={tmp}",
                "trainer.epochs=1",
                f"trainer.len_epoch={n}",
                f"trainer.log_step={n}",
                "trainer.grad_accum_steps=1",
                "trainer.visualize=null",
                "trainer.monitor=off",
                *val_limits,
            ]
        )
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    r = next(r for r in rows if r["split"] == "train")
    print(
        f"\n{args.config}: {n} batches, {r['batches_per_s']:.3f} batches/s, "
        f"{r['audio_s_per_s']:.1f} audio s per wall s, data wait {100 * r['data_wait_share']:.1f}%"
    )


if __name__ == "__main__":
    main()
