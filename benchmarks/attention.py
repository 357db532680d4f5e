"""Relative-position attention: the fused SDPA path vs materialised scores, side by side.

    python benchmarks/attention.py [--dim 256 --heads 4 --batch 8 --seconds 16] [--device cuda --amp bf16]

The Conformer's attention (``RelPositionMultiHeadAttention``) hands the content term
(q + u) . k, the softmax and the weighted sum to ``scaled_dot_product_attention`` and
passes the relative-position term as an additive mask, shifted by a strided view.
The baseline below computes the same scores the textbook way: both [B, H, T, T] score
matrices, a gather for the shift, softmax, and a matrix product, each kept for backward.
Both share one set of weights; the script checks that they agree, then reports per
implementation, for one forward + backward at ``--batch`` x ``--seconds`` (frames after
the 4x subsampling of 10 ms features):

  * median wall time of ``--steps`` runs after ``--warmup``, the two implementations
    alternating step by step;
  * MiB of activations saved for backward (the storages autograd keeps, weights not
    counted, seen with ``torch.autograd.graph.saved_tensors_hooks``; device-independent);
  * on CUDA, the peak allocated memory of the step above what was allocated before.
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_asr.inference import autocast_context  # noqa: E402
from hw_asr.model.conformer import RelPositionMultiHeadAttention  # noqa: E402
from hw_asr.model.transformer_parts import sinusoids  # noqa: E402


class MaterialisedRelAttention(RelPositionMultiHeadAttention):
    """Baseline: content and position scores as full [B, H, T, T] tensors, shifted with a gather."""

    def forward(self, x, mask):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.d_k).transpose(1, 2)
        k, v = (layer(x).view(b, t, self.heads, self.d_k).transpose(1, 2) for layer in (self.k, self.v))
        rel = sinusoids(torch.arange(t - 1, -t, -1, device=x.device), self.heads * self.d_k)
        p = self.pos(rel.to(x.dtype)).view(2 * t - 1, self.heads, self.d_k).transpose(0, 1)
        content = torch.matmul(q + self.pos_bias_u[:, None], k.transpose(-2, -1))
        position = torch.matmul(q + self.pos_bias_v[:, None], p.transpose(-2, -1))
        i = torch.arange(t, device=x.device)
        index = (t - 1 - i[:, None] + i[None, :]).expand(b, self.heads, t, t)
        scores = (content + position.gather(-1, index)) / math.sqrt(self.d_k)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        attn = nn.functional.dropout(torch.softmax(scores, dim=-1), self.dropout_p, self.training)
        return self.out(torch.matmul(attn, v).transpose(1, 2).reshape(b, t, -1))


def saved_bytes(fn, exclude=()):
    """Run ``fn``; return its result and the bytes of the storages autograd saved for backward.

    Counted per storage, so a view or an expanded tensor costs what it really holds and a
    tensor saved twice counts once; storages of ``exclude`` (the weights) are not counted.
    """
    skip = {p.untyped_storage().data_ptr() for p in exclude}
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    return result, sum(seen.values())


def run(args):
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    fused = RelPositionMultiHeadAttention(args.dim, args.heads).to(device).train()
    baseline = MaterialisedRelAttention(args.dim, args.heads).to(device).train()
    baseline.load_state_dict(fused.state_dict())
    frames = max(1, round(args.seconds * 100 / 4))
    x = torch.randn(args.batch, frames, args.dim, device=device, requires_grad=True)
    lengths = torch.linspace(frames // 2 or 1, frames, args.batch, device=device).long()  # some keys padded
    mask = torch.arange(frames, device=device)[None] < lengths[:, None]

    with torch.no_grad(), autocast_context(device, args.amp):
        diff = (fused(x, mask).float() - baseline(x, mask).float()).abs().max().item()
    tolerance = 1e-4 if args.amp in (None, "fp32") else 5e-2
    if not diff <= tolerance:
        raise SystemExit(f"the two implementations disagree: max |difference| {diff:.2e} > {tolerance:g}")

    modules = {"materialised": baseline, "sdpa": fused}

    def step(module):
        with autocast_context(device, args.amp):
            out, saved = saved_bytes(lambda: module(x, mask), exclude=list(module.parameters()))
        out.float().pow(2).mean().backward()
        x.grad = None
        module.zero_grad(set_to_none=True)
        return saved

    rows = {"frames": frames, "max_abs_difference": diff}
    for name, module in modules.items():
        rows[name] = {"saved_mib": step(module) / 2**20}
        if device.type == "cuda":
            sync()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            step(module)
            rows[name]["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    for _ in range(args.warmup):
        for module in modules.values():
            step(module)
    times = {name: [] for name in modules}
    for _ in range(args.steps):  # alternate, so that drifts in the machine's speed hit both alike
        for name, module in modules.items():
            sync()
            start = time.perf_counter()
            step(module)
            sync()
            times[name].append(time.perf_counter() - start)
    for name in modules:
        rows[name]["step_s"] = statistics.median(times[name])
    rows["time_ratio"] = rows["sdpa"]["step_s"] / rows["materialised"]["step_s"]
    rows["saved_ratio"] = rows["sdpa"]["saved_mib"] / rows["materialised"]["saved_mib"]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=256, help="model width (Conformer-M: 256)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=16.0, help="utterance length before 4x subsampling")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["fp32", "fp16", "bf16"], default="fp32", help="autocast on CUDA")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.amp != "fp32" and not args.device.startswith("cuda"):
        parser.error("--amp fp16/bf16 needs --device cuda (autocast is for CUDA; the CPU trains in fp32)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    rows = run(args)
    print(
        f"dim {args.dim}, heads {args.heads}, batch {args.batch} x {rows['frames']} frames, {args.amp} on "
        f"{args.device}; outputs agree within {rows['max_abs_difference']:.1e}"
    )
    for name in ("materialised", "sdpa"):
        row = rows[name]
        peak = f", peak {row['peak_mib']:8.1f} MiB" if "peak_mib" in row else ""
        print(
            f"{name:>13}: {row['step_s'] * 1e3:8.1f} ms fwd+bwd, saved for backward {row['saved_mib']:8.1f} MiB" + peak
        )
    print(f"sdpa / materialised: time {rows['time_ratio']:.2f}x, saved memory {rows['saved_ratio']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
