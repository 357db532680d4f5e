"""What block-by-block compilation costs as a Conformer gets deeper.

    python benchmarks/compile_blocks.py [--layers 1 18] [--dim 64]

For each depth, in a process of its own with an empty inductor cache: a Conformer
(``--dim``, 2 heads) is compiled as ``trainer.compile=true`` compiles it
(``compile_blocks(dynamic=True)``, inductor), then runs forward + backward on a batch of
2 at two lengths (2.0 s and 2.6 s). Reports the number of graphs dynamo compiled and the
wall time of the two steps, compilation included.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_asr.model import (
    Conformer,  # noqa: E402
    LogMelFrontend,
)


def one(layers, dim):
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = Conformer(
        29, dim=dim, heads=2, layers=layers, conv_kernel=7, dropout=0.0, frontend=LogMelFrontend(n_mels=80)
    ).train()
    model.compile_blocks(dynamic=True)
    t0 = time.perf_counter()
    for n in (32000, 41600):
        audio = torch.randn(2, n) * 0.1
        model(audio, torch.tensor([n, n - 3000]))["log_probs"].sum().backward()
    return {"layers": layers, "graphs": counters["stats"]["unique_graphs"], "seconds": time.perf_counter() - t0}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="*", default=[1, 18])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child: one depth
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.layers[0], args.dim)))
        return
    print("| encoder layers | graphs compiled | compile + 2 steps (s) |\n|---:|---:|---:|")
    for layers in args.layers:
        with tempfile.TemporaryDirectory() as cache:
            out = subprocess.run(
                [sys.executable, __file__, "--one", "--layers", str(layers), "--dim", str(args.dim)],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache},
            ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {r['layers']} | {r['graphs']} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
