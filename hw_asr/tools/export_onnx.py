"""Export a checkpoint's model to ONNX: raw 16 kHz audio in, CTC log-probs out.

    python -m hw_asr.tools.export_onnx -r checkpoints/<run>/model_best.pth -o model.onnx
    python test.py -r checkpoints/<run>/model_best.pth --runtime onnx --onnx model.onnx -o result.json

The graph includes the STFT frontend, so it takes ``audio [batch, samples]`` (float32) and
``audio_length [batch]`` (int64, samples) and returns ``log_probs [batch, frames, tokens]`` and
``log_probs_length [batch]``; batch and sample axes are dynamic. The checkpoint's text encoder
and decoders stay with the checkpoint: ``test.py --runtime onnx`` reads them from it and runs
the exported graph with onnxruntime in place of the PyTorch model.

After writing, the export is checked: onnxruntime's log-probs on a batch of random audio of
lengths other than the traced ones must be within ``--tolerance`` of PyTorch's (1e-4 by default).
Recurrent models (DeepSpeech2) are refused with the reason.
"""

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from hw_asr.builder import load_model
from hw_asr.checkpoint import CheckpointError, find_checkpoint
from hw_asr.export import OnnxCTCModel, export_onnx, random_batch
from hw_asr.logger import setup_logging
from hw_asr.schema import sample_rate as config_sample_rate

logger = logging.getLogger(__name__)


def max_difference(
    model: torch.nn.Module,
    onnx_model: OnnxCTCModel,
    sample_rate: int,
    seconds: Sequence[float] = (3.1, 0.7, 1.9),
    seed: int = 0,
) -> float:
    """Largest absolute difference between the two models' log-probs over the real frames of a random
    batch (and whether the output lengths agree)."""
    audio, lengths = random_batch([int(s * sample_rate) for s in seconds], seed)
    with torch.no_grad():
        ref = model(audio, lengths)
    got = onnx_model(audio, lengths)
    if not torch.equal(ref["log_probs_length"], got["log_probs_length"]):
        return float("inf")
    return max(
        (got["log_probs"][i, :n] - ref["log_probs"][i, :n]).abs().max().item()
        for i, n in enumerate(ref["log_probs_length"].tolist())
    )


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--resume", required=True, help="checkpoint (.pth) or run folder (its model_best.pth)")
    parser.add_argument("-o", "--output", help="the .onnx file (default: next to the checkpoint, .onnx suffix)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest log-prob difference accepted")
    args = parser.parse_args(argv)
    setup_logging()
    checkpoint = find_checkpoint(args.resume, prefer_best=True)
    model, encoder, config = load_model(checkpoint)
    sample_rate = config_sample_rate(config)
    output = Path(args.output or Path(checkpoint).with_suffix(".onnx"))
    output.parent.mkdir(parents=True, exist_ok=True)
    logger.info("exporting %s (%s) to %s", checkpoint, type(model).__name__, output)
    export_onnx(
        model,
        output,
        sample_rate=sample_rate,
        metadata={"checkpoint": str(checkpoint), "arch": type(model).__name__, "vocab": list(encoder.vocab)},
    )
    diff = max_difference(model, OnnxCTCModel(output), sample_rate)
    if not diff <= args.tolerance:
        raise ValueError(
            f"{output}: onnxruntime's log-probs differ from PyTorch's by {diff:.3g} (> {args.tolerance}); "
            "the file is kept for inspection"
        )
    size_mb = output.stat().st_size / 2**20
    print(f"wrote {output} ({size_mb:.1f} MiB); onnxruntime vs PyTorch: max |log-prob difference| {diff:.2e}")
    return output


if __name__ == "__main__":
    try:
        main()
    except (CheckpointError, FileNotFoundError, NotImplementedError, ValueError) as e:
        sys.exit(f"error: {e}")
