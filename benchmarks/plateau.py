"""When does each preset leave CTC's blank plateau? Trains each preset's mini LibriSpeech recipe for a
few hundred steps and reports the first step (and the training seconds) at which it has left it.

    python benchmarks/plateau.py --presets conformer_s fastconformer_s quartznet_5x5 \\
        --train ../shared/data/mini-librispeech/LibriSpeech/train-clean-5 \\
        --dev ../shared/data/mini-librispeech/LibriSpeech/dev-clean-5 \\
        --steps 300 --eval-every 50 [--budget-s 2400] [--device cuda] [--output plateau.json] \\
        data.train.batch_sampler.args.max_batch_seconds=120 [key=value ...]

A preset is a name from ``configs/arch/`` (trained with ``configs/<name>_mini_librispeech.json``), or any
recipe name or path that ``benchmarks/learning.py`` takes. Each is trained through ``train.py`` in a
process of its own (``learning.run_recipe``), its schedule planned for ``--steps`` steps, with a greedy
dev evaluation every ``--eval-every`` steps.

"Left the plateau" has two measures, both read from the run's ``metrics.jsonl``:
- **dev**: the first evaluation with greedy dev CER below ``--cer`` (0.8);
- **train**: the first logged train-loss window below ``--loss-ratio`` (0.7) times the unigram entropy
  (nats) of the training transcripts in the recipe's tokens. That entropy is the CTC loss per token of a
  model that ignores the audio (2.84 for English characters, 4.6 for 128 BPE pieces), so for characters
  the threshold is about 2.0, and sub-word recipes get the same relative bar.
Each is reported as a step and as training seconds (the logged windows' step times, evaluations
excluded), so that a deeper, slower model can be compared with a shallow one both by step and by time.
"""

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import learning  # noqa: E402

CER_KEY = "val_CER (argmax)"


def recipe_for(name):
    """``configs/<name>_mini_librispeech.json`` for a preset of ``configs/arch``; otherwise what
    ``learning.recipe_path`` makes of the name."""
    if (REPO / "configs" / "arch" / f"{name}.json").is_file() and not (
        REPO / "configs" / f"{name}_mini_librispeech.json"
    ).is_file():
        raise SystemExit(f"error: preset {name!r} has no mini LibriSpeech recipe configs/{name}_mini_librispeech.json")
    return learning.recipe_path(name)


def unigram_entropy(recipe, train, overrides=()):
    """Entropy (nats) of the token unigram distribution of the training transcripts, in the recipe's
    text encoder's tokens: the CTC loss per token of a model whose output does not depend on the audio."""
    from hw_asr.builder import build_dataset, build_text_encoder
    from hw_asr.config import apply_overrides, load_config
    from hw_asr.model.output_prior import transcript_counts

    config = load_config(str(recipe))
    block = learning.dataset_block(train)
    config = apply_overrides(config, [f"data.train.datasets={json.dumps([block])}", *overrides])
    encoder = build_text_encoder(config)
    counts, _ = transcript_counts(build_dataset(config, "train", None, train=False), encoder)
    total = float(counts.sum())
    if not total:
        raise SystemExit(f"error: the training transcripts of {recipe} have no tokens")
    return -sum(c / total * math.log(c / total) for c in counts.tolist() if c)


def train_seconds(train_rows, step):
    """Training seconds up to ``step``: each logged window's steps at its own rate (evaluations excluded)."""
    total, prev = 0.0, 0
    for r in train_rows:
        if r["step"] > step:
            break
        total += (r["step"] - prev) / max(r["batches_per_s"], 1e-9)
        prev = r["step"]
    return total


def plateau_exit(rows, loss_threshold, cer_threshold):
    """First step (and training seconds) with dev CER below ``cer_threshold``, and with the logged train
    loss below ``loss_threshold``; None where it never happened. Also the dev CER at each evaluation."""
    train = [r for r in rows if r.get("split") == "train"]
    evals = [(r["step"], r[CER_KEY]) for r in rows if r.get("split") == "epoch" and r.get(CER_KEY) is not None]
    dev_step = next((s for s, cer in evals if cer < cer_threshold), None)
    loss_step = next((r["step"] for r in train if r["loss"] < loss_threshold), None)
    return {
        "dev_exit_step": dev_step,
        "dev_exit_train_s": None if dev_step is None else train_seconds(train, dev_step),
        "loss_exit_step": loss_step,
        "loss_exit_train_s": None if loss_step is None else train_seconds(train, loss_step),
        "s_per_step": statistics.fmean(1 / max(r["batches_per_s"], 1e-9) for r in train) if train else None,
        "dev_cer_by_step": evals,
    }


def table(results):
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    lines = [
        "| preset | steps | dev CER < 0.8 at step (train s) | loss < bar at step (train s) | loss bar | "
        "s/step | audio-s/s | dev CER by step |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        dev = "not reached" if r["dev_exit_step"] is None else f"{r['dev_exit_step']} ({r['dev_exit_train_s']:.0f})"
        loss = "not reached" if r["loss_exit_step"] is None else f"{r['loss_exit_step']} ({r['loss_exit_train_s']:.0f})"
        by_step = ", ".join(f"{s}: {c:.3f}" for s, c in r["dev_cer_by_step"])
        lines.append(
            f"| {r['recipe']} | {r['steps']} | {dev} | {loss} | {r['loss_threshold']:.2f} "
            f"| {fmt(r['s_per_step'], '.2f')} | {fmt(r['audio_s_per_s'], '.0f')} | {by_step} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", required=True, help="names of configs/arch presets, or recipes")
    learning.add_run_arguments(parser)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps (the schedule is planned for them)")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between greedy dev evaluations")
    parser.add_argument("--budget-s", type=float, default=3600, help="wall-clock cap per preset (whole process)")
    parser.add_argument("--cer", type=float, default=0.8, help="dev CER bar")
    parser.add_argument("--loss-ratio", type=float, default=0.7, help="train-loss bar, times the unigram entropy")
    args = parser.parse_args(argv)
    out_dir = learning.prepare_run(args, "plateau")
    recipes = {name: recipe_for(name) for name in args.presets}  # every name resolves before the first run
    run_args = argparse.Namespace(
        train=args.train,
        dev=args.dev,
        steps=args.steps,
        epoch_steps=args.eval_every,
        budget_s=args.budget_s,
        keep_last=1,
        log_step=args.log_step,
        max_audio_length=args.max_audio_length,
        device=args.device,
        amp=args.amp,
        overrides=args.overrides,
        follow_budget=False,
        reserve_s=0.0,
    )
    results = []
    for name, recipe in recipes.items():
        entropy = unigram_entropy(recipe, args.train, args.overrides)
        threshold = args.loss_ratio * entropy
        print(f"{name}: up to {args.steps} steps on {args.device}; loss bar {threshold:.2f} (entropy {entropy:.2f})")
        run = learning.run_recipe(str(recipe), run_args, out_dir)
        rows = learning.read_rows(out_dir / run["recipe"])
        result = {
            **run,
            "recipe": name,
            "unigram_entropy": entropy,
            "loss_threshold": threshold,
            **plateau_exit(rows, threshold, args.cer),
        }
        results.append(result)
        print(
            f"{name}: dev CER < {args.cer} at step {result['dev_exit_step']}, "
            f"loss < {threshold:.2f} at step {result['loss_exit_step']} ({run['steps']} steps)",
            flush=True,
        )
        if args.output:
            Path(args.output).write_text(json.dumps(results, indent=2))
    print(table(results))
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
