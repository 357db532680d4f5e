"""Write a dataset as Lhotse Shar shards for the streamed data path (``SharDataset``).

    python -m hw_asr.tools.export_shar configs/base/librispeech_960.json --split train -o data/shar/ls960 \\
        [--shard-size 1000] [--format flac|opus] [--seed 0] [--no-shuffle] [key=value ...]
    python -m hw_asr.tools.export_shar data/train/manifest.jsonl -o data/shar/train        # a manifest
    python -m hw_asr.tools.export_shar .../LibriSpeech/train-clean-100 -o data/shar/tc100  # a corpus part
    python -m hw_asr.tools.export_shar --index-only data/shar/from_lhotse                  # index a Shar folder

The source is a config (its ``--split``, every dataset of it, after its filters), a JSON-lines manifest,
or a LibriSpeech part folder. Utterances are written in a seeded random order (so that every shard is a
sample of the whole corpus), ``--shard-size`` per shard, at the config's sample rate (16 kHz for a
manifest or folder): FLAC (lossless, the default) or Ogg/Opus (about 6x smaller). A file that cannot be
read is left out with a warning and counted. ``shar_index.json`` (the shards, their utterance counts and
seconds) is written last: a folder without it is an unfinished export, which ``SharDataset`` refuses.
"""

import argparse
import io
import json
import logging
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from hw_asr.builder import build_dataset, build_text_encoder
from hw_asr.config import ConfigError, apply_overrides, load_config
from hw_asr.datasets import LibrispeechDataset, ManifestDataset
from hw_asr.datasets.base_dataset import dataset_parts
from hw_asr.datasets.shar_dataset import INDEX_FORMAT, INDEX_NAME
from hw_asr.files import atomic_write_text
from hw_asr.manifests import report_skipped
from hw_asr.schema import sample_rate as config_sample_rate
from hw_asr.tools.export_manifest import decoded_rows

logger = logging.getLogger(__name__)

FORMATS = ("flac", "opus")


def source_rows(
    source: str | os.PathLike, split: str = "train", overrides: Sequence[str] = ()
) -> tuple[list[dict], int]:
    """``(rows, sample_rate)``: the utterances (``path``, ``text``, ``duration``) of a config's split, a
    manifest or a LibriSpeech part folder."""
    path = Path(source)
    if path.is_dir():
        if path.parent.name != "LibriSpeech":
            raise ConfigError(f"{path} is a folder but not a LibriSpeech part (.../LibriSpeech/<part>)")
        dataset = LibrispeechDataset(part=path.name, data_dir=str(path.parent.parent), download=False)
        return dataset.index, 16000
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    if path.suffix == ".json":
        config = apply_overrides(load_config(path), list(overrides))
        if split not in config.get("data", {}):
            raise ConfigError(f"{path} has no data split {split!r} (it has {sorted(config.get('data', {}))})")
        dataset = build_dataset(config, split, build_text_encoder(config), train=False)
        return [row for part in dataset_parts(dataset) for row in part.index], config_sample_rate(config)
    return ManifestDataset(manifest_path=str(path)).index, 16000


def _cut(key: str, audio: np.ndarray, sample_rate: int, text: str, source: str) -> Any:
    """A Lhotse cut holding ``audio`` in memory (float WAV bytes: exact) with its transcript."""
    from lhotse import MonoCut, Recording, SupervisionSegment

    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format="WAV", subtype="FLOAT")
    recording = Recording.from_bytes(buffer.getvalue(), recording_id=key)
    duration = recording.duration
    supervision = SupervisionSegment(
        id=key, recording_id=key, start=0.0, duration=duration, text=text, custom={"source": str(source)}
    )
    return MonoCut(id=key, start=0.0, duration=duration, channel=0, recording=recording, supervisions=[supervision])


def export(
    rows: Sequence[dict],
    out_dir: str | os.PathLike,
    sample_rate: int = 16000,
    shard_size: int = 1000,
    fmt: str = "flac",
    seed: int = 0,
    shuffle: bool = True,
) -> tuple[dict, list]:
    """Write ``rows`` as shards in ``out_dir``; returns ``(index, skipped)``."""
    from lhotse.shar import SharWriter

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    if fmt == "opus" and sample_rate not in (8000, 12000, 16000, 24000, 48000):
        raise ValueError(f"Opus stores 8, 12, 16, 24 or 48 kHz audio, not {sample_rate} Hz; use --format flac")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; export into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r["path"])
    if shuffle:
        random.Random(seed).shuffle(rows)
    shards, skipped = [], []
    with SharWriter(str(out_dir), fields={"recording": fmt}, shard_size=shard_size) as writer:
        for row, audio, key in decoded_rows(rows, sample_rate, skipped, f"export {out_dir.name}"):
            if not shards or shards[-1]["utterances"] == shard_size:
                n = len(shards)
                shards.append(
                    {
                        "cuts": f"cuts.{n:06d}.jsonl.gz",
                        "recording": f"recording.{n:06d}.tar",
                        "utterances": 0,
                        "seconds": 0.0,
                        "max_seconds": 0.0,
                    }
                )
            seconds = len(audio) / sample_rate
            writer.write(_cut(key, audio, sample_rate, row["text"], row["path"]))
            shard = shards[-1]
            shard["utterances"] += 1
            shard["seconds"] += seconds
            shard["max_seconds"] = max(shard["max_seconds"], seconds)
    index = write_index(out_dir, shards, sample_rate=sample_rate, audio_format=fmt)
    return index, skipped


def write_index(out_dir: str | os.PathLike, shards: Sequence[dict], **extra: Any) -> dict:
    index = {
        "format": INDEX_FORMAT,
        "version": 1,
        **extra,
        "utterances": sum(s["utterances"] for s in shards),
        "seconds": sum(s["seconds"] for s in shards),
        "shards": shards,
    }
    atomic_write_text(Path(out_dir) / INDEX_NAME, json.dumps(index, indent=1))
    return index


def index_folder(folder: str | os.PathLike) -> dict:
    """Write ``shar_index.json`` for a Shar folder written by Lhotse itself (reads its cut manifests)."""
    from lhotse.lazy import LazyJsonlIterator

    folder = Path(folder)
    cuts = sorted(folder.glob("cuts.*.jsonl.gz"))
    if not cuts:
        raise FileNotFoundError(f"{folder} holds no cuts.NNNNNN.jsonl.gz: not a Lhotse Shar folder")
    shards = []
    for path in cuts:
        number = path.name.split(".")[1]
        recording = folder / f"recording.{number}.tar"
        if not recording.is_file():
            raise FileNotFoundError(f"{path.name} has no {recording.name} beside it")
        durations = [float(c["duration"]) for c in LazyJsonlIterator(path)]
        shards.append(
            {
                "cuts": path.name,
                "recording": recording.name,
                "utterances": len(durations),
                "seconds": sum(durations),
                "max_seconds": max(durations, default=0.0),
            }
        )
    return write_index(folder, shards)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="a config (.json), a manifest (.jsonl) or a LibriSpeech part folder")
    parser.add_argument("--split", default="train", help="the config's data split to export (default: train)")
    parser.add_argument("-o", "--output", help="output folder (new or empty)")
    parser.add_argument("--shard-size", type=int, default=1000, help="utterances per shard (default: 1000)")
    parser.add_argument("--format", choices=FORMATS, default="flac", help="flac (lossless, default) or opus")
    parser.add_argument("--seed", type=int, default=0, help="the order the utterances are written in")
    parser.add_argument("--no-shuffle", action="store_true", help="keep the source's order")
    parser.add_argument("--index-only", metavar="SHAR_DIR", help="only write shar_index.json for a Shar folder")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.index_only:
            index = index_folder(args.index_only)
            where = Path(args.index_only) / INDEX_NAME
            print(f"{where}: {len(index['shards'])} shards, {index['utterances']} utterances")
            return index
        if not args.source or not args.output:
            parser.error("give a source and -o OUTPUT (or --index-only SHAR_DIR)")
        rows, sample_rate = source_rows(args.source, args.split, args.overrides)
        index, skipped = export(
            rows, args.output, sample_rate, args.shard_size, args.format, args.seed, not args.no_shuffle
        )
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"error: {e}")
    report_skipped(args.source, skipped)
    print(
        f"{args.output}: {index['utterances']} utterances ({index['seconds'] / 3600:.2f} h) in "
        f"{len(index['shards'])} shards, {len(skipped)} left out (unreadable)"
    )
    return index


if __name__ == "__main__":
    main()
