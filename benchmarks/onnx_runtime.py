"""onnxruntime vs PyTorch eager on the CPU: inference speed of the ONNX export of each preset, side by side.

    python benchmarks/onnx_runtime.py [--presets conformer_s fastconformer_s quartznet_5x5 ebranchformer_golos \
        deepspeech2_gru800]
        [--checkpoint run/model_best.pth ...] [--threads 2] [--seconds 10] [--repeats 3] [--json out.json]

For each preset in ``configs/arch`` (random weights) and each ``--checkpoint``: export the model
with ``hw_asr.export.export_onnx`` (frontend included), check that onnxruntime's log-probs match
PyTorch's on a batch of random lengths (the largest difference is reported), then time inference
on ``--seconds``-long random-noise utterances at batch 1 and batch 16, both runtimes limited to
``--threads`` threads. Figures: real-time factor (compute seconds per audio second, lower is
faster) and the speed-up of onnxruntime over PyTorch; each is the median of ``--repeats`` runs
after one warm-up run.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.models import ARCH_DIR, timed  # noqa: E402
from hw_asr.builder import build_model, build_text_encoder, load_model  # noqa: E402
from hw_asr.config import load_config  # noqa: E402
from hw_asr.export import OnnxCTCModel, export_onnx  # noqa: E402
from hw_asr.tools.export_onnx import max_difference  # noqa: E402


def models(args):
    for name in args.presets:
        cfg = load_config(ARCH_DIR / f"{name}.json")
        yield name, build_model(cfg, n_tokens=len(build_text_encoder(cfg))).eval()
    for path in args.checkpoint:
        yield Path(path).parent.name + "/" + Path(path).name, load_model(path)[0]


def measure(name, model, args, folder):
    path = Path(folder) / f"{name.replace('/', '_')}.onnx"
    t0 = time.perf_counter()
    export_onnx(model, path)
    row = {"model": name, "params": sum(p.numel() for p in model.parameters()), "export_s": time.perf_counter() - t0}
    onnx_model = OnnxCTCModel(path, threads=args.threads)
    row["max_diff"] = max_difference(model, onnx_model, 16000)
    for batch in (1, 16):
        audio = torch.randn(batch, int(args.seconds * 16000)) * 0.1
        lengths = torch.full((batch,), audio.shape[1])
        with torch.no_grad():
            t_torch = timed(lambda: model(audio, lengths), args.repeats, lambda: None)
        t_onnx = timed(lambda: onnx_model(audio, lengths), args.repeats, lambda: None)
        seconds = batch * args.seconds
        row[f"rtf_torch_b{batch}"], row[f"rtf_onnx_b{batch}"] = t_torch / seconds, t_onnx / seconds
        row[f"speedup_b{batch}"] = t_torch / t_onnx
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--presets",
        nargs="*",
        default=["conformer_s", "fastconformer_s", "quartznet_5x5", "ebranchformer_golos", "deepspeech2_gru800"],
    )
    parser.add_argument("--checkpoint", nargs="*", default=[], help="trained checkpoints to measure as well")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    import onnxruntime

    print(
        f"CPU, {args.threads} threads; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
        f"{args.seconds:g} s utterances; RTF = compute seconds per audio second\n"
    )
    print(
        "| model | parameters | export (s) | max log-prob diff | RTF torch b1 | RTF onnx b1 | onnx speed-up b1 "
        "| RTF torch b16 | RTF onnx b16 | onnx speed-up b16 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, model in models(args):
            r = measure(name, model, args, folder)
            rows.append(r)
            print(
                f"| {r['model']} | {r['params']:,} | {r['export_s']:.0f} | {r['max_diff']:.1e} "
                f"| {r['rtf_torch_b1']:.4f} | {r['rtf_onnx_b1']:.4f} | {r['speedup_b1']:.2f}x "
                f"| {r['rtf_torch_b16']:.4f} | {r['rtf_onnx_b16']:.4f} | {r['speedup_b16']:.2f}x |",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
