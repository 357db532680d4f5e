"""Parameters, inference speed, training step time and peak memory of every architecture preset.

    python benchmarks/models.py [--presets quartznet_5x5 conformer_s ...] [--seconds 10] [--device cpu]

Each preset runs in a process of its own. For each preset in ``configs/arch``:
  * peak memory of one training step: the growth of the process's peak resident
    memory (CPU) or the peak allocated CUDA memory during the first training step;
  * inference real-time factor as audio seconds processed per wall second, eval mode,
    no gradients, on ``--seconds``-long random-noise utterances at batch 1 and batch 16;
  * one training step (forward, CTC loss, backward, AdamW step) on a fixed batch of
    ``--train-batch`` utterances of ``--train-seconds`` seconds.
Each figure is the median of ``--repeats`` runs after one warm-up run.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_asr.builder import build_model, build_text_encoder  # noqa: E402
from hw_asr.config import load_config  # noqa: E402
from hw_asr.loss import CTCLoss  # noqa: E402

ARCH_DIR = Path(__file__).resolve().parents[1] / "configs" / "arch"


def timed(fn, repeats, sync):
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name, args, device):
    cfg = load_config(ARCH_DIR / f"{name}.json")
    encoder = build_text_encoder(cfg)
    model = build_model(cfg, n_tokens=len(encoder)).to(device)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sr = 16000
    row = {"preset": name, "params": params}
    model.train()
    criterion = CTCLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n = args.train_batch
    audio = torch.randn(n, int(args.train_seconds * sr), device=device) * 0.1
    lengths = torch.full((n,), audio.shape[1], device=device)
    targets = torch.randint(1, len(encoder), (n, int(args.train_seconds * 12)), device=device)
    target_lengths = torch.full((n,), targets.shape[1], device=device)

    def step():
        out = model(audio, lengths)
        loss = criterion(out["log_probs"], out["log_probs_length"], targets, target_lengths)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        row["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        row["peak_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    row["train_step_s"] = timed(step, args.repeats, sync)
    model.eval()
    for batch in (1, 16):
        audio = torch.randn(batch, int(args.seconds * sr), device=device) * 0.1
        lengths = torch.full((batch,), audio.shape[1], device=device)
        with torch.no_grad():
            t = timed(lambda: model(audio, lengths), args.repeats, sync)
        row[f"rtf_b{batch}"] = batch * args.seconds / t
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=sorted(p.stem for p in ARCH_DIR.glob("*.json")))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process: one preset
    args, _ = parser.parse_known_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.one:
        print(json.dumps(measure(args.presets[0], args, device)))
        return
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; inference on "
        f"{args.seconds:g} s utterances; training step on {args.train_batch} x {args.train_seconds:g} s\n"
    )
    print(
        "| preset | parameters | RTF batch 1 (audio s / s) | RTF batch 16 (audio s / s) | train step (s) "
        "| train step peak memory (MiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.presets:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            "--presets",
            name,
            "--seconds",
            str(args.seconds),
            "--train-batch",
            str(args.train_batch),
            "--train-seconds",
            str(args.train_seconds),
            "--repeats",
            str(args.repeats),
            "--device",
            args.device,
        ]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(
            f"| {name} | {r['params']:,} | {r['rtf_b1']:.1f} | {r['rtf_b16']:.1f} | {r['train_step_s']:.2f} "
            f"| {r['peak_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
