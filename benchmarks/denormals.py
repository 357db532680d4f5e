"""Does a long CPU run slow down because of subnormal floats? A trained checkpoint's step against a fresh model's,
and against the same trained step with subnormals flushed to zero.

    python benchmarks/denormals.py -c RUN/config.json --checkpoint RUN/checkpoint-epochN.pth [--steps N]
        [--repeats R] [key=value ...]

Three arms, each a fresh process running the bare training loop of ``benchmarks/pipeline.py``
(forward, CTC, backward, clipping, optimiser) over the same ``--steps`` batches; steps 2..N are timed:

- ``fresh``: the model as initialised (seeded), a new optimiser;
- ``trained``: the checkpoint's weights and optimiser state (Adam's moments are where subnormals collect);
- ``trained_flush``: the same, with ``torch.set_flush_denormal(True)`` before any computation, so every
  intra-op thread starts with flush-to-zero and denormals-are-zero set (a thread copies the setting from the
  thread that creates it, and torch's pool starts at the first parallel operation).

The arms alternate (fresh, trained, trained_flush, fresh, ...) so that drift in the machine's speed
falls on all three. Reported per arm: wall seconds per timed step (median over the repeats), the share of
subnormal values in the optimiser state after the steps, and the share among the activations of one more
forward pass (every module's tensor output). Subnormals (magnitude below 1.18e-38 in float32) take
a slow microcode path on x86 CPUs. The trained arm in a fresh process also tells a model's state from a
long-running process's state: if it is no slower than ``fresh``, a slowdown seen late in a run lies in the
process (allocator, caches) or the host, not in the weights.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.pipeline import BareLoop, collect_batches, run_arms  # noqa: E402
from hw_asr.builder import build_dataset, build_text_encoder  # noqa: E402
from hw_asr.checkpoint import safe_torch_load  # noqa: E402
from hw_asr.config import apply_overrides, get_path, load_config  # noqa: E402
from hw_asr.trainer.host_memory import configure as configure_host_memory  # noqa: E402

ARMS = ("fresh", "trained", "trained_flush")
TINY = torch.finfo(torch.float32).tiny


def subnormal_counts(tensors):
    """(subnormal values, all values) over the floating-point tensors."""
    sub = total = 0
    for t in tensors:
        if torch.is_tensor(t) and t.is_floating_point():
            t = t.detach().float()
            total += t.numel()
            sub += int(((t != 0) & (t.abs() < TINY)).sum())
    return sub, total


def activation_counts(model, batch):
    """Subnormal share among every module's tensor outputs in one forward pass (train mode, no grad)."""
    found = [0, 0]

    def hook(_module, _inputs, output):
        outs = output if isinstance(output, (tuple, list)) else [output]
        sub, total = subnormal_counts(o for o in outs if torch.is_tensor(o))
        found[0] += sub
        found[1] += total

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for h in handles:
            h.remove()
    return found


def child(arm, config_path, checkpoint, steps, overrides):
    if arm == "trained_flush" and not torch.set_flush_denormal(True):  # first: before any thread pool exists
        sys.exit("this CPU has no flush-to-zero / denormals-are-zero: nothing to compare")
    config = apply_overrides(load_config(config_path), overrides)
    configure_host_memory(get_path(config, "trainer.keep_freed_memory", None), torch.device("cpu"))
    encoder = build_text_encoder(config)
    batches = collect_batches(config, build_dataset(config, "train", encoder), steps)
    bare = BareLoop(config, encoder, config["trainer"].get("grad_norm_clip"))
    if arm != "fresh":
        state = safe_torch_load(checkpoint)
        bare.model.load_state_dict(state["model"])
        bare.optimizer.load_state_dict(state["optimizer"])
        del state
    bare.step(batches[0])  # warm-up, not timed
    for batch in batches[1:]:
        bare.step(batch)
    timing = bare.timing
    if timing.non_finite:
        sys.exit(f"{timing.non_finite} steps had a non-finite loss")
    opt_sub, opt_total = subnormal_counts(v for s in bare.optimizer.state.values() for v in s.values())
    act_sub, act_total = activation_counts(bare.model, batches[-1])
    print(
        json.dumps(
            {
                "wall": timing.seconds / (steps - 1),
                "shapes": [list(s) for s in timing.shapes],
                "optimizer_subnormal_share": opt_sub / max(opt_total, 1),
                "activation_subnormal_share": act_sub / max(act_total, 1),
                "optimizer_steps": max(
                    (int(s["step"]) for s in bare.optimizer.state.values() if "step" in s), default=0
                ),
            }
        )
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="the run's config.json (or the recipe it ran)")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of that run, with its optimiser state")
    parser.add_argument("--steps", type=int, default=5, help="training steps per arm (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the three arms")
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is a warm-up and is not timed)")
    if not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint: no such file: {args.checkpoint}")
    if args.child:
        return child(args.child, args.config, args.checkpoint, args.steps, args.overrides)
    argv = ["-c", args.config, "--checkpoint", args.checkpoint, "--steps", str(args.steps)]
    runs = run_arms(__file__, ARMS, args.repeats, argv, args.overrides)
    wall = {arm: statistics.median(r["wall"] for r in runs[arm]) for arm in ARMS}
    print(f"\n{args.checkpoint}: {args.steps} steps per arm ({args.steps - 1} timed), {args.repeats} rounds")
    print("| arm | wall s / step (each run) | median | subnormal share: optimiser state | activations |")
    print("|---|---|---:|---:|---:|")
    for arm in ARMS:
        each = " ".join(f"{r['wall']:.2f}" for r in runs[arm])
        opt = statistics.median(r["optimizer_subnormal_share"] for r in runs[arm])
        act = statistics.median(r["activation_subnormal_share"] for r in runs[arm])
        print(f"| {arm} | {each} | {wall[arm]:.2f} | {opt:.2e} | {act:.2e} |")
    print(f"trained / fresh: {wall['trained'] / wall['fresh']:.3f}")
    print(f"trained / trained_flush: {wall['trained'] / wall['trained_flush']:.3f}")
    return {"wall": wall, "runs": runs}


if __name__ == "__main__":
    main()
