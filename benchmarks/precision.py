"""Training throughput per precision and compile mode, and model-FLOPs utilisation (MFU).

    python benchmarks/precision.py --preset conformer_m --device cuda [--batch 32 --seconds 16]

Every mode trains a fresh copy of an architecture preset (``configs/arch``), same seed,
on one fixed batch already on the device, with the Trainer's own precision machinery:
``autocast_context`` (bf16 / fp16 autocast on CUDA), a ``GradScaler`` for fp16,
gradient clipping and AdamW. Modes, side by side in one run:

  * ``fp32`` (TF32 off), ``tf32`` (fp32 with TF32 matrix products and convolutions,
    as ``trainer.tf32=true``), ``fp16``, ``bf16``: eager;
  * ``<precision>+compile``: the model's blocks compiled as ``trainer.compile=true``
    compiles them (``CTCModel.compile_blocks``; ``--compile-options`` takes a JSON dict
    of ``torch.compile`` arguments instead).

Defaults: ``fp32 tf32 fp16 bf16 bf16+compile`` on CUDA, ``fp32 fp32+compile`` on CPU (autocast
is for CUDA; the Trainer trains in fp32 on CPU). Each mode runs ``--warmup`` steps
(kernel selection, compilation) and then ``--steps`` timed steps; the figure is the
median step time. Steps whose loss or gradients were not finite are counted and shown.

MFU = model FLOPs of one training step / step time / the device's dense peak. The FLOPs
are counted once, eager on the CPU, with ``torch.utils.flop_counter`` (matrix products,
convolutions and attention in forward and backward; element-wise work and the
optimiser are not counted, as is usual for MFU). The peak is the dense (no sparsity)
bf16 tensor-core figure of the GPU from its data sheet (table ``PEAK_BF16_TFLOPS``),
or ``--peak-tflops``. On CPU no MFU is given unless ``--peak-tflops`` is.

The batch is random noise of ``--batch`` x ``--seconds`` with random targets: every
utterance has the same length, so there is no padding and the figure is the model's,
not the sampler's (see ``benchmarks/padding.py`` for padding).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.models import ARCH_DIR  # noqa: E402
from hw_asr.builder import build_model, build_text_encoder, compile_options  # noqa: E402
from hw_asr.config import load_config  # noqa: E402
from hw_asr.inference import allow_tf32, autocast_context  # noqa: E402
from hw_asr.loss import CTCLoss  # noqa: E402

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")

# Dense bf16 tensor-core peak in TFLOPS (vendor data sheets, without 2:4 sparsity).
# Matched in order against torch.cuda.get_device_name(): the first substring(s) found wins.
PEAK_BF16_TFLOPS = [
    (("H100", "PCIe"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H100",), 989.0),  # SXM
    (("H200",), 989.0),
    (("GH200",), 989.0),
    (("A100",), 312.0),
    (("L40S",), 362.0),
    (("L4",), 121.0),
    (("A10",), 125.0),
]


def device_peak_tflops(name):
    """The table's dense bf16 peak for a CUDA device name, or None when it is not in the table."""
    for keys, tflops in PEAK_BF16_TFLOPS:
        if all(k in name for k in keys):
            return tflops
    return None


def parse_mode(mode, device):
    precision, _, extra = mode.partition("+")
    if precision not in PRECISIONS or extra not in ("", "compile"):
        raise SystemExit(f"mode {mode!r}: expected one of {PRECISIONS}, optionally with '+compile'")
    if precision != "fp32" and device.type != "cuda":
        raise SystemExit(f"mode {mode!r} needs CUDA: {device.type} trains in plain fp32")
    return precision, extra == "compile"


def make_batch(model, n_tokens, batch, seconds, device, sample_rate=16000, seed=0):
    """Random audio and targets; target length is 12 characters per second, capped at
    half the model's output frames so that every CTC alignment exists."""
    g = torch.Generator().manual_seed(seed)
    audio = (torch.randn(batch, int(seconds * sample_rate), generator=g) * 0.1).to(device)
    lengths = torch.full((batch,), audio.shape[1], device=device)
    with torch.no_grad():
        frames = int(model.eval()(audio=audio[:1], audio_length=lengths[:1])["log_probs_length"][0])
    model.train()
    n_chars = max(1, min(int(seconds * 12), frames // 2))
    targets = torch.randint(1, n_tokens, (batch, n_chars), generator=g).to(device)
    return {
        "audio": audio,
        "audio_length": lengths,
        "text_encoded": targets,
        "text_encoded_length": torch.full((batch,), n_chars, device=device),
    }, frames


def count_step_flops(model, criterion, batch):
    """FLOPs of one forward + backward, counted eagerly (fp32); gradients are cleared after."""
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(**batch)
        criterion(**batch, **out)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


class StepRunner:
    """One training step as the Trainer takes it: autocast forward, loss, scaled backward,
    unscale, clip, scaler step, update."""

    def __init__(self, model, precision, device, clip=10.0, lr=1e-4):
        self.model, self.precision, self.device, self.clip = model, precision, device, clip
        self.criterion = CTCLoss()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    def __call__(self, batch):
        with autocast_context(self.device, self.precision):
            out = self.model(**batch)
        loss = self.criterion(**batch, **out)["loss"]
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), norm.detach()


def measure_mode(cfg, n_tokens, mode, args, device):
    precision, compiled = parse_mode(mode, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = build_model(cfg, n_tokens=n_tokens).to(device)
    batch, frames = make_batch(model, n_tokens, args.batch, args.seconds, device)
    if device.type == "cuda":  # fp32 means fp32 here; tf32 is fp32 with TF32 matrix products and convolutions
        allow_tf32(precision == "tf32")
    runner = StepRunner(model, "fp32" if precision == "tf32" else precision, device)
    if compiled:
        options = json.loads(args.compile_options) if args.compile_options else compile_options(True)
        model.compile_blocks(**options)  # in place, as train.py does for trainer.compile
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        runner(batch)
    sync()
    warmup_s = time.perf_counter() - t0
    times, finite = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss, norm = runner(batch)
        sync()
        times.append(time.perf_counter() - t0)
        finite.append(bool(torch.isfinite(loss)) and bool(torch.isfinite(norm)))
    row = {
        "mode": mode,
        "step_s": statistics.median(times),
        "warmup_s": warmup_s,
        "frames": frames,
        "non_finite_steps": finite.count(False),
        "final_loss": float(loss),
    }
    if device.type == "cuda":
        row["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="conformer_m", help="a file name in configs/arch, without .json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--modes", nargs="*", default=None)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile-options", default=None, help="JSON dict of torch.compile arguments")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="dense bf16 peak of the device (default: from the table, CUDA only)",
    )
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device")
    preset_path = ARCH_DIR / f"{args.preset}.json"
    if not preset_path.is_file():
        raise SystemExit(f"no preset {preset_path}; choose one of {sorted(p.stem for p in ARCH_DIR.glob('*.json'))}")
    modes = args.modes or (
        ["fp32", "tf32", "fp16", "bf16", "bf16+compile"] if device.type == "cuda" else ["fp32", "fp32+compile"]
    )
    for mode in modes:
        parse_mode(mode, device)  # refuse a bad mode before anything runs
    cfg = load_config(preset_path)
    n_tokens = len(build_text_encoder(cfg))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or (device_peak_tflops(name) if device.type == "cuda" else None)

    # counted eagerly in fp32 on the CPU: FLOPs do not depend on precision or device, and on
    # the CPU recurrent layers run as matrix products the counter sees (cuDNN's RNN kernel is opaque to it)
    torch.manual_seed(0)
    model = build_model(cfg, n_tokens=n_tokens)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = count_step_flops(
        model, CTCLoss(), make_batch(model, n_tokens, args.batch, args.seconds, torch.device("cpu"))[0]
    )
    del model
    rows = []
    for mode in modes:
        row = measure_mode(cfg, n_tokens, mode, args, device)
        row["audio_s_per_s"] = args.batch * args.seconds / row["step_s"]
        row["tflops_per_s"] = flops / row["step_s"] / 1e12
        row["mfu"] = row["tflops_per_s"] / peak if peak else None
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print(
        f"\n{args.preset} ({params:,} parameters) on {name}, torch {torch.__version__}; batch {args.batch} x "
        f"{args.seconds:g} s ({rows[0]['frames']} output frames each); {args.steps} timed steps after "
        f"{args.warmup} warm-up; {flops / 1e9:,.1f} GFLOP per step (forward + backward, counted); "
        f"peak {f'{peak:g} TFLOPS dense bf16' if peak else 'unknown (no MFU)'}"
    )
    print(
        "| mode | step (s) | audio s / s | vs fp32 | achieved TFLOPS | MFU | peak memory (MiB) "
        "| warm-up (s) | non-finite steps |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = next((r["step_s"] for r in rows if r["mode"] == "fp32"), None)
    for r in rows:
        ratio = f"{base / r['step_s']:.2f}x" if base else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        mem = f"{r['peak_mib']:.0f}" if "peak_mib" in r else "-"
        print(
            f"| {r['mode']} | {r['step_s']:.4f} | {r['audio_s_per_s']:.0f} | {ratio} | {r['tflops_per_s']:.3g} "
            f"| {mfu} | {mem} | {r['warmup_s']:.1f} | {r['non_finite_steps']} |"
        )
    if any(r["non_finite_steps"] for r in rows):
        print(
            "WARNING: some steps had a non-finite loss or gradient (skipped updates are cheaper): "
            "those modes' timings are not comparable",
            file=sys.stderr,
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "preset": args.preset,
                    "device": name,
                    "params": params,
                    "flops_per_step": flops,
                    "peak_tflops": peak,
                    "rows": rows,
                },
                indent=1,
            )
        )
    return rows, flops


if __name__ == "__main__":
    main()
