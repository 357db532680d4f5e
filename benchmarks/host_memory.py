"""Training on the CPU with glibc's default allocator against ``trainer.keep_freed_memory``.

    python benchmarks/host_memory.py -c configs/conformer_s_mini_librispeech.json [--steps N] [--repeats R]
        [key=value ...]

Each arm is a fresh process (the allocator's state is per process) that runs the bare
training loop of ``benchmarks/pipeline.py`` -- forward, CTC, backward, clipping,
optimiser -- over the same ``--steps`` batches; steps 2..N are timed. The arms
alternate (system, keep, system, keep, ...) and the headline is the median over the
pairs of system / keep wall time per step. Beside it: system CPU time per step (the
kernel mapping and zeroing pages), minor page faults per step, and the peak resident
size, which is what keeping freed memory costs.
"""

import argparse
import json
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.pipeline import BareLoop, collect_batches, run_arms  # noqa: E402
from hw_asr.builder import build_dataset, build_text_encoder  # noqa: E402
from hw_asr.config import apply_overrides, load_config  # noqa: E402
from hw_asr.trainer.host_memory import keep_freed_memory  # noqa: E402

ARMS = ("system", "keep")


def child(arm, config_path, steps, overrides):
    """One arm in this process: the figures per timed step, as a JSON line."""
    if arm == "keep" and not keep_freed_memory():
        sys.exit("this C library has no glibc mallopt: nothing to compare")
    config = apply_overrides(load_config(config_path), overrides)
    encoder = build_text_encoder(config)
    batches = collect_batches(config, build_dataset(config, "train", encoder), steps)
    bare = BareLoop(config, encoder, config["trainer"].get("grad_norm_clip"))
    bare.step(batches[0])  # warm-up: the loop's Timing leaves it out, and so does the user/system split
    usage = resource.getrusage(resource.RUSAGE_SELF)
    for batch in batches[1:]:
        bare.step(batch)
    end, timing, n = resource.getrusage(resource.RUSAGE_SELF), bare.timing, steps - 1
    if timing.non_finite:
        sys.exit(f"{timing.non_finite} steps had a non-finite loss: choose a configuration that trains cleanly")
    print(
        json.dumps(
            {
                "wall": timing.seconds / n,
                "user": (end.ru_utime - usage.ru_utime) / n,
                "sys": (end.ru_stime - usage.ru_stime) / n,
                "faults": timing.faults_per_step,
                "max_rss_gb": end.ru_maxrss / 2**20,
                "shapes": timing.shapes,
            }
        )
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--steps", type=int, default=6, help="training steps per arm (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=3, help="system/keep pairs")
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is a warm-up and is not timed)")
    if args.child:
        return child(args.child, args.config, args.steps, args.overrides)
    runs = run_arms(__file__, ARMS, args.repeats, ["-c", args.config, "--steps", str(args.steps)], args.overrides)
    pairs = [s["wall"] / k["wall"] for s, k in zip(runs["system"], runs["keep"])]
    print(f"\n{args.config}: {args.steps} steps per arm ({args.steps - 1} timed), {args.repeats} pairs")
    print("| per timed step | system | keep |\n|---|---:|---:|")
    for key, label, fmt in (
        ("wall", "wall s", ".3f"),
        ("user", "user CPU s", ".2f"),
        ("sys", "system CPU s", ".2f"),
        ("faults", "minor page faults", ".0f"),
        ("max_rss_gb", "peak resident GiB", ".2f"),
    ):
        cells = [" ".join(f"{r[key]:{fmt}}" for r in runs[arm]) for arm in ARMS]
        print(f"| {label} (each run) | {cells[0]} | {cells[1]} |")
    print(f"| system / keep wall of each pair | {' '.join(f'{p:.3f}' for p in pairs)} | |")
    median = statistics.median(pairs)
    print(f"| **speed-up, median of the pairs** | **{median:.3f}** | |")
    return {"speedup": median, "pairs": pairs, "runs": runs}


if __name__ == "__main__":
    main()
