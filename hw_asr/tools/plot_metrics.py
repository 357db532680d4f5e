"""Plot a run's ``metrics.jsonl`` as a PNG of its curves (for people without comet).

python -m hw_asr.tools.plot_metrics checkpoints/<run>/metrics.jsonl [-o curves.png]
"""

import argparse
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path


def read_series(path: str | os.PathLike) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{metric: {split: [(step, value), ...]}}`` from a metrics.jsonl."""
    series = defaultdict(lambda: defaultdict(list))
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for key, value in row.items():
            if key in ("step", "split", "time", "epoch") or not isinstance(value, (int, float)):
                continue
            name = key[len(row["split"]) + 1 :] if key.startswith(row["split"] + "_") else key
            series[name][row["split"]].append((row["step"], value))
    return series


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", help="path to metrics.jsonl")
    parser.add_argument("-o", "--output", help="PNG path (default: curves.png beside the metrics)")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_series(args.metrics)
    if not series:
        raise SystemExit(f"{args.metrics}: no numeric metrics found")
    names = sorted(series)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for split, points in sorted(series[name].items()):
            steps, values = zip(*points)
            ax.plot(steps, values, label=split, marker="." if len(points) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(args.output) if args.output else Path(args.metrics).with_name("curves.png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
