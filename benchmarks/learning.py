"""Does each recipe learn? Train recipes for a wall-clock budget each, then score greedy WER/CER on a dev set.

    python benchmarks/learning.py --recipes deepspeech2 conformer_s fastconformer_s quartznet_5x5 \\
        --train ../shared/data/mini-librispeech/LibriSpeech/train-clean-5 \\
        --dev ../shared/data/mini-librispeech/LibriSpeech/dev-clean-5 \\
        --budget-s 100 --steps 300 [--device cuda] [--output learning.json] [key=value ...]

Each recipe is trained through ``train.py`` in a process of its own, exactly as a user would run it,
with its data replaced by ``--train`` / ``--dev`` and its schedule planned for ``--steps`` optimiser
steps (``trainer.len_epoch`` = ``--epoch-steps``, a dev evaluation after each epoch). When the budget
runs out first, the run gets SIGINT: it finishes its step and writes ``checkpoint-interrupted.pth``
(the budget counts the whole process: start-up, training and the per-epoch evaluations). The last
checkpoint is then scored greedily on ``--dev`` by ``test.py``. With ``--follow-budget`` the run also gets
``trainer.time_budget_s`` = ``--budget-s`` minus ``--reserve-s`` (start-up and the last evaluation): its
schedule keeps up with the clock, so a machine slower than the plan still finishes the warm-up and decay,
and the run ends itself with an evaluation and a checkpoint (SIGINT at ``--budget-s`` stays as a backstop).
One table, one row per recipe: steps, audio trained on, the last logged train loss, dev WER/CER, median
training audio-s/s.

Recipes: a config path, or a name: ``configs/<name>_mini_librispeech.json``, else
``configs/recipes/<name>.json`` (``deepspeech2`` is the mini LibriSpeech baseline recipe).
``--train`` / ``--dev``: a JSON-lines manifest (``python -m hw_asr.tools.export_manifest`` writes one,
with the audio re-encoded as Ogg/Opus so that it travels compactly), or a LibriSpeech part folder
(``.../LibriSpeech/train-clean-5``). On CUDA the recipes train under ``--amp`` (default bf16).
Extra ``key=value`` overrides apply to every recipe (e.g. ``data.train.num_workers=4``).
"""

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from hw_asr.checkpoint import epoch_checkpoints, load_checkpoint  # noqa: E402
from hw_asr.config import load_config  # noqa: E402

SHORT_NAMES = {"deepspeech2": REPO / "configs" / "recipes" / "mini_librispeech_baseline.json"}


def recipe_path(name):
    """A config path as given, or the recipe a short name stands for."""
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    for path in (
        Path(name),
        REPO / "configs" / f"{name}_mini_librispeech.json",
        REPO / "configs" / "recipes" / f"{name}.json",
    ):
        if path.is_file():
            return path
    raise SystemExit(
        f"error: no recipe {name!r}: not a file, configs/{name}_mini_librispeech.json nor configs/recipes/{name}.json"
    )


def dataset_block(path, max_audio_length=None):
    """The dataset block for a manifest file, a LibriSpeech part folder or a Shar folder (``export_shar``)."""
    path = Path(path).resolve()
    if (path / "shar_index.json").is_file():
        args = {"shar_dir": str(path)}
        block = {"type": "SharDataset", "args": args}
    elif path.is_file():
        args = {"manifest_path": str(path)}
        block = {"type": "ManifestDataset", "args": args}
    elif path.is_dir() and path.parent.name == "LibriSpeech":
        args = {"part": path.name, "data_dir": str(path.parent.parent), "download": False}
        block = {"type": "LibrispeechDataset", "args": args}
    else:
        raise SystemExit(
            f"error: {path} is neither a manifest file nor a LibriSpeech part folder (.../LibriSpeech/<part>), "
            f"nor a Shar folder (python -m hw_asr.tools.export_shar)"
        )
    if max_audio_length:
        args["max_audio_length"] = max_audio_length
    return block


def read_rows(run_dir):
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarise(rows, steps_done):
    """Train loss of the last logged window, audio trained on (logged windows, plus the steps after the
    last one at the mean audio per step), median audio-s/s, and the dev CER after each epoch."""
    train = [r for r in rows if r.get("split") == "train"]
    audio, last_step, prev = 0.0, 0, 0
    for r in train:
        window_steps = r["step"] - prev
        audio += r["audio_s_per_s"] * window_steps / max(r["batches_per_s"], 1e-9)
        last_step = prev = r["step"]
    if last_step and steps_done > last_step:
        audio += audio / last_step * (steps_done - last_step)
    epochs = [(r["step"], r.get("val_CER (argmax)")) for r in rows if r.get("split") == "epoch"]
    return {
        "train_loss": train[-1]["loss"] if train else None,
        "audio_h": audio / 3600,
        "audio_s_per_s": statistics.median(r["audio_s_per_s"] for r in train) if train else None,
        "dev_cer_by_step": epochs,
    }


def last_checkpoint(run_dir):
    run_dir = Path(run_dir)
    interrupted = run_dir / "checkpoint-interrupted.pth"
    if interrupted.is_file():
        return interrupted
    periodic = epoch_checkpoints(run_dir)
    return periodic[max(periodic)] if periodic else None


def steps_of(checkpoint):
    return int(load_checkpoint(checkpoint)["step"])


def train_for_budget(cmd, budget_s, log_path):
    """Run ``cmd``; SIGINT when ``budget_s`` runs out (then wait for its checkpoint). Returns (wall_s, stopped)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        stopped = False
        try:
            proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            stopped = True
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise SystemExit(f"error: {cmd[2]} did not stop within 600 s of SIGINT; see {log_path}") from None
    if proc.returncode not in (0, -signal.SIGINT) and not (stopped and proc.returncode == 130):
        raise SystemExit(f"error: training exited with {proc.returncode}; see {log_path}")
    return time.perf_counter() - start, stopped


def stream_sampler_block(config):
    """A ``StreamBucketSampler`` that batches like the recipe's train split (its ``max_batch_seconds`` or
    ``batch_size``, and its ``length_grid``)."""
    data = config["data"]["train"]
    sampler_args = (data.get("batch_sampler") or {}).get("args", {})
    keep = {k: sampler_args[k] for k in ("max_batch_seconds", "batch_size", "length_grid") if k in sampler_args}
    if "max_batch_seconds" not in keep and "batch_size" not in keep:
        keep["batch_size"] = data["batch_size"]
    if "max_batch_seconds" in keep:
        keep.pop("batch_size", None)
    return {"type": "StreamBucketSampler", "args": keep}


def run_recipe(name, args, out_dir):
    recipe = recipe_path(name)
    run_name = Path(name).stem
    run_dir = out_dir / run_name
    steps = args.steps
    epochs = max(1, math.ceil(steps / args.epoch_steps))
    data = {
        "data.train.datasets": [dataset_block(args.train, args.max_audio_length)],
        "data.val.datasets": [dataset_block(args.dev)],
    }
    if data["data.train.datasets"][0]["type"] == "SharDataset":  # streamed: the recipe's batch size, streamed
        data["data.train.batch_sampler"] = stream_sampler_block(load_config(recipe))
    overrides = [f"{k}={json.dumps(v)}" for k, v in data.items()] + [
        f"trainer.epochs={epochs}",
        f"trainer.len_epoch={args.epoch_steps}",
        f"trainer.save_dir={out_dir}",
        f"trainer.run_name={run_name}",
        "trainer.visualize=null",
        "trainer.early_stop=null",
        "trainer.save_period=1",
        f"trainer.keep_last={args.keep_last}",
        f"trainer.log_step={args.log_step}",
        "decoders=null",
    ]
    if args.device.startswith("cuda"):
        overrides.append(f"trainer.amp={args.amp}")
    if args.follow_budget:
        overrides.append(f"trainer.time_budget_s={args.budget_s - args.reserve_s}")
    overrides += args.overrides
    device = [] if args.device == "auto" else ["-d", args.device]
    cmd = [sys.executable, "train.py", "-c", str(recipe), *device, *overrides]
    wall, stopped = train_for_budget(cmd, args.budget_s, out_dir / f"{run_name}.train.log")
    checkpoint = last_checkpoint(run_dir)
    if checkpoint is None:
        raise SystemExit(
            f"error: {run_name} wrote no checkpoint within {args.budget_s} s; see {out_dir / f'{run_name}.train.log'}"
        )
    result_json = out_dir / f"{run_name}.dev.json"
    test_cmd = [
        sys.executable,
        "test.py",
        "-r",
        str(checkpoint),
        "-o",
        str(result_json),
        "--splits",
        "val",
        *device,
        "decoders=null",
    ]
    subprocess.run(test_cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    scores = json.loads(result_json.read_text())["splits"]["val"]["argmax"]
    done = steps_of(checkpoint)
    planned = epochs * args.epoch_steps
    stopped = stopped or (args.follow_budget and done < planned)  # the run's own time budget ended it
    return {
        "recipe": run_name,
        "config": str(recipe.relative_to(REPO) if recipe.is_relative_to(REPO) else recipe),
        "steps": done,
        "planned_steps": planned,
        "stopped_by_budget": stopped,
        "wall_s": wall,
        "dev_wer": scores["WER"],
        "dev_cer": scores["CER"],
        **summarise(read_rows(run_dir), done),
    }


def table(results):
    lines = [
        "| recipe | steps (planned) | audio seen (h) | train loss | dev WER | dev CER | audio-s/s | wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in results:
        lines.append(
            f"| {r['recipe']} | {r['steps']} ({r['planned_steps']}) | {r['audio_h']:.2f} "
            f"| {fmt(r['train_loss'], '.2f')} | {r['dev_wer']:.3f} | {r['dev_cer']:.3f} "
            f"| {fmt(r['audio_s_per_s'], '.0f')} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def add_run_arguments(parser):
    """The options every training benchmark shares: data, logging, device, output and overrides."""
    parser.add_argument("--train", required=True, help="train manifest or LibriSpeech part folder")
    parser.add_argument("--dev", required=True, help="dev manifest or LibriSpeech part folder")
    parser.add_argument("--log-step", type=int, default=10)
    parser.add_argument("--max-audio-length", type=float, default=20.0, help="longest train utterance, seconds")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="bf16", choices=["fp32", "fp16", "bf16"], help="CUDA only")
    parser.add_argument(
        "--out-dir", default=None, help="run folders and logs (default: a new folder under checkpoints/)"
    )
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")


def prepare_run(args, prefix):
    """Resolve ``--device auto`` in ``args`` and make the output folder (``checkpoints/<prefix>_<time>``
    unless ``--out-dir``); returns the folder."""
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    out_dir = Path(args.out_dir or REPO / "checkpoints" / f"{prefix}_{time.strftime('%m%d_%H%M%S')}").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--recipes", nargs="+", default=["deepspeech2", "conformer_s", "fastconformer_s", "quartznet_5x5"]
    )
    add_run_arguments(parser)
    parser.add_argument("--budget-s", type=float, required=True, help="wall-clock seconds per recipe (whole process)")
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps the schedule is planned for")
    parser.add_argument("--epoch-steps", type=int, default=50, help="steps between dev evaluations")
    parser.add_argument("--keep-last", type=int, default=1, help="periodic checkpoints kept (to average them)")
    parser.add_argument(
        "--follow-budget",
        action="store_true",
        help="give the run trainer.time_budget_s (budget minus --reserve-s): its schedule keeps up with the clock",
    )
    parser.add_argument(
        "--reserve-s", type=float, default=60.0, help="with --follow-budget: start-up and last evaluation, seconds"
    )
    args = parser.parse_args(argv)
    if args.follow_budget and not 0 <= args.reserve_s < args.budget_s:
        parser.error(f"--reserve-s must be at least 0 and below --budget-s ({args.budget_s:g}), got {args.reserve_s:g}")
    out_dir = prepare_run(args, "learning")
    for name in args.recipes:
        recipe_path(name)  # every name resolves before the first run starts
    results = []
    for name in args.recipes:
        print(
            f"{name}: training for up to {args.budget_s:.0f} s ({args.steps} planned steps) on {args.device}",
            flush=True,
        )
        results.append(run_recipe(name, args, out_dir))
        r = results[-1]
        print(f"{name}: {r['steps']} steps, dev WER {r['dev_wer']:.3f} CER {r['dev_cer']:.3f}", flush=True)
        if args.output:
            Path(args.output).write_text(json.dumps(results, indent=2))
    print(table(results))
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
