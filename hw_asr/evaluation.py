"""Evaluation: predictions per utterance and WER/CER per decoder, as one JSON (the ``test.py`` command).

``Scores`` collects rows and corpus metrics; ``evaluate`` runs a model over loaders (with word timestamps
on request); ``evaluate_ensemble`` does the same through a confidence ensemble; ``main`` is ``test.py``'s
command line (its usage is in test.py). A file that cannot be read is never replaced by another: it is
left out, listed under ``skipped`` with the reason, and counted in the printed summary.
"""

import argparse
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from hw_asr.alignment import align_batch
from hw_asr.audio import AudioError, load_audio
from hw_asr.builder import build_dataloader, build_dataset, build_decoders, eval_splits, load_model
from hw_asr.checkpoint import (
    CheckpointError,
    find_checkpoint,
    safe_torch_load,
)
from hw_asr.config import ConfigError, apply_overrides, get_path, load_config
from hw_asr.datasets import CustomDirAudioDataset
from hw_asr.datasets.base_dataset import dataset_parts
from hw_asr.datasets.download import DownloadError
from hw_asr.device import pick_device
from hw_asr.ensemble import ConfidenceEnsemble
from hw_asr.ensemble.ensemble import FORMAT as ENSEMBLE_FORMAT
from hw_asr.ensemble.ensemble import check_ensemble_state
from hw_asr.export import OnnxCTCModel
from hw_asr.files import write_json
from hw_asr.inference import score_split
from hw_asr.logger import setup_logging
from hw_asr.metric import CERMetric, WERMetric, calc_cer, calc_wer
from hw_asr.schema import sample_rate as config_sample_rate
from hw_asr.text_encoder.base import BaseTextEncoder
from hw_asr.trainer.host_memory import configure as configure_host_memory

logger = logging.getLogger("test")

USAGE = """Evaluate a checkpoint: predictions per utterance and WER/CER per decoder, as one JSON.

    python test.py -r checkpoints/<run>/model_best.pth -o result.json            # the config's eval splits
    python test.py -r checkpoints/<run> -o result.json                            # its model_best.pth
    python test.py -r ... -o result.json -t path/to/folder                        # audio (+ same-named .txt)
    python test.py -r ... -o result.json -c eval.json                             # eval.json's non-train splits
    python test.py -r ... -o result.json --splits val,test                        # these splits by name

A file that cannot be read is never replaced by another: it is left out, listed under
``skipped`` in the JSON with the reason, and counted in the printed summary.

``-r`` also takes a confidence-ensemble file (``python -m hw_asr.ensemble.build``);
its rows then name the member each utterance was routed to and all confidences.
``-t`` takes a folder of audio files with optional same-named ``.txt``
transcripts, or a folder holding ``audio/`` and ``transcriptions/``.
"""

# what the command line reports as "error: ..." (exit 1) rather than a traceback
CLI_ERRORS = (ConfigError, CheckpointError, DownloadError, FileNotFoundError)


def folder_dataset(
    folder: str | os.PathLike, encoder: BaseTextEncoder | None, sample_rate: int
) -> CustomDirAudioDataset:
    folder = Path(folder)
    if (folder / "audio").is_dir():
        trans = folder / "transcriptions"
        return CustomDirAudioDataset(
            folder / "audio", trans if trans.is_dir() else None, text_encoder=encoder, sample_rate=sample_rate
        )
    return CustomDirAudioDataset(folder, text_encoder=encoder, sample_rate=sample_rate)


def index_skips(dataset: Dataset, split: str) -> list[dict[str, str]]:
    """Rows left out while the index was built (bad headers, missing files, ...), as skipped rows."""
    rows = []
    for part in dataset_parts(dataset):
        for where, reason in getattr(part, "skipped", ()):
            named = re.fullmatch(r"(.*) \((.*)\)", where)  # "manifest.jsonl:3 (wav/a.wav)"
            row = {"split": split, "audio_path": named.group(2) if named else where, "reason": reason}
            if named:
                row["where"] = named.group(1)
            rows.append(row)
    return rows


class Scores:
    """Per-utterance rows and corpus WER/CER per decoder, per split and over all splits, and the files
    that were left out (``skipped``) with the reason."""

    def __init__(self, decoders: Iterable[str]) -> None:
        self.decoders, self.rows, self.per_split = list(decoders), [], {}
        self.totals = self._metrics()
        self.skipped = []

    def skip(self, split: str, items: Iterable[tuple[str, str] | dict]) -> None:
        """``items``: ``(path, reason)`` of files that could not be read, or ready rows."""
        self.skipped += [
            it if isinstance(it, dict) else {"split": split, "audio_path": it[0], "reason": it[1]} for it in items
        ]

    def _metrics(self) -> dict[str, tuple[WERMetric, CERMetric]]:
        return {d: (WERMetric(decoder=d), CERMetric(decoder=d)) for d in self.decoders}

    @staticmethod
    def _summary(metrics: Mapping[str, tuple[WERMetric, CERMetric]]) -> dict[str, dict[str, float]]:
        return {d: {"WER": w.result(), "CER": c.result()} for d, (w, c) in metrics.items()}

    def add(
        self,
        split: str,
        paths: Sequence[str],
        refs: Sequence[str],
        hyps: Mapping[str, Sequence[str | None]],
        extra: Sequence[dict] | None = None,
    ) -> None:
        """``hyps``: decoder -> hypotheses; ``extra``: more fields per row (or None)."""
        split_metrics = self.per_split.setdefault(split, self._metrics())
        for d in self.decoders:
            for m in (*split_metrics[d], *self.totals[d]):
                m.update(refs, hyps[d])
        for i, path in enumerate(paths):
            row = {"split": split, "audio_path": path, "ground_truth": refs[i] or None, **(extra[i] if extra else {})}
            for d in self.decoders:
                row[f"pred_{d}"] = hyps[d][i]
                if refs[i] and hyps[d][i] is not None:
                    row[f"wer_{d}"] = calc_wer(refs[i], hyps[d][i])
                    row[f"cer_{d}"] = calc_cer(refs[i], hyps[d][i])
            self.rows.append(row)

    def result(self) -> dict[str, Any]:
        """WER/CER are null where no utterance has a transcript (standard JSON has no NaN)."""
        return {
            "decoders": self._summary(self.totals),
            "splits": {s: self._summary(m) for s, m in self.per_split.items()},
            "counts": {
                "decoded": len(self.rows),
                "scored": sum(bool(r["ground_truth"]) for r in self.rows),
                "skipped": len(self.skipped),
            },
            "utterances": self.rows,
            "skipped": self.skipped,
        }


def evaluate(
    model: torch.nn.Module,
    encoder: BaseTextEncoder,
    loaders: Mapping[str, DataLoader],
    decoders: Mapping[str, Any],
    device: torch.device,
    timestamps_of: str | None = None,
    sample_rate: int = 16000,
) -> dict[str, Any]:
    """Rows per utterance and aggregate WER/CER per decoder, per split and over all splits. With
    ``timestamps_of`` (a decoder name), each row also has ``words``: that decoder's hypothesis aligned to
    the frames (:func:`hw_asr.alignment.align_words`; null where it cannot be aligned)."""
    scores = Scores(decoders)
    for split, loader in loaders.items():
        scores.skip(split, index_skips(loader.dataset, split))

        def add_rows(batch: dict, outputs: dict | None, hyps: dict[str, list]) -> None:
            extra = None
            if timestamps_of and outputs is not None:
                extra = word_rows(model, batch, outputs, hyps[timestamps_of], encoder, sample_rate)
            scores.add(split, batch["audio_path"], batch["text"], hyps, extra)

        tally = score_split(model, loader, encoder, decoders, device, desc=f"test {split}", on_batch=add_rows)
        scores.skip(split, tally.skipped)
    return scores.result()


def word_rows(
    model: torch.nn.Module,
    batch: Mapping[str, Any],
    outputs: Mapping[str, torch.Tensor],
    texts: Sequence[str],
    encoder: BaseTextEncoder,
    sample_rate: int,
) -> list[dict[str, Any]]:
    """``[{"words": [...]}, ...]`` for a batch: each text aligned to its utterance's log-probs."""
    return [{"words": w} for w in align_batch(model, batch["audio_length"], outputs, texts, encoder, sample_rate)]


def evaluate_ensemble(
    ensemble: ConfidenceEnsemble,
    datasets: Mapping[str, Dataset],
    decoders: Sequence[str],
    batch_size: int = 8,
    chunk: int = 64,
) -> dict[str, Any]:
    """As :func:`evaluate` for a confidence ensemble: each utterance is transcribed by the
    member the selector picks; rows also name that member and hold all confidences."""
    scores = Scores(decoders)
    routed = {m.name: 0 for m in ensemble.members}
    sample_rate = ensemble.members[0].sample_rate
    for split, dataset in datasets.items():
        scores.skip(split, index_skips(dataset, split))
        index = dataset.index
        for start in tqdm(range(0, len(index), chunk), desc=f"test {split}", leave=False):
            part, waves = [], []
            for r in index[start : start + chunk]:  # a file that cannot be read is left out, never replaced
                try:
                    waves.append((load_audio(r["path"], sample_rate), sample_rate))
                    part.append(r)
                except AudioError as e:
                    scores.skip(split, [(r["path"], e.reason)])
            results = ensemble.route_and_decode(waves, decoders, batch_size)
            for res in results:
                routed[res["model"]] += 1
            scores.add(
                split,
                [r["path"] for r in part],
                [r["text"] for r in part],
                {d: [res["text"][d] for res in results] for d in decoders},
                [
                    {"model": res["model"], "confidences": res["confidences"], "probabilities": res["probabilities"]}
                    for res in results
                ],
            )
    info = {
        "members": [m.name for m in ensemble.members],
        "routed": routed,
        "confidence": ensemble.confidence,
        "temperature": ensemble.temperature,
    }
    return {"ensemble": info, **scores.result()}


def run_ensemble(args: argparse.Namespace, device: torch.device, state: dict[str, Any]) -> dict[str, Any]:
    ensemble = ConfidenceEnsemble.from_state(check_ensemble_state(state, args.resume), device, args.resume)
    sample_rate = ensemble.members[0].sample_rate
    if args.test_data_folder:
        datasets = {"test": folder_dataset(args.test_data_folder, None, sample_rate)}
    elif args.config:
        data_cfg = apply_overrides(load_config(args.config), args.overrides)
        datasets = {s: build_dataset(data_cfg, s, None, train=False) for s in pick_splits(data_cfg, args.splits)}
    else:
        raise ConfigError("an ensemble file has no evaluation splits of its own: use -t <folder> or -c <config>")
    common = set.intersection(*(set(m.decoders) for m in ensemble.members))
    available = ["argmax"] + sorted(common)
    names = available if args.decoders == "all" else [d.strip() for d in args.decoders.split(",") if d.strip()]
    missing = [d for d in names if d not in available]
    if missing:
        raise ConfigError(f"decoders {missing} are not available in every member; available: {available}")
    return {"checkpoint": str(args.resume), **evaluate_ensemble(ensemble, datasets, names, args.batch_size)}


def run_checkpoint(args: argparse.Namespace, device: torch.device, state: dict[str, Any]) -> dict[str, Any]:
    model, encoder, config = load_model(args.resume, device, state)
    if args.runtime == "onnx":
        model = onnx_model(args, model, encoder)
    sample_rate = config_sample_rate(config)
    eval_cfg = load_config(args.config) if args.config else config

    if args.test_data_folder:
        data_cfg = {"data": {"test": {"batch_size": args.batch_size}}}
        datasets = {"test": folder_dataset(args.test_data_folder, encoder, sample_rate)}
    else:
        data_cfg = apply_overrides(eval_cfg, args.overrides)
        data_cfg.setdefault("sample_rate", sample_rate)
        # evaluation: no augmentation and no substitution, a train split named in --splits included
        datasets = {s: build_dataset(data_cfg, s, encoder, train=False) for s in pick_splits(data_cfg, args.splits)}
    for split in datasets:
        data_cfg["data"][split]["batch_size"] = args.batch_size
        data_cfg["data"][split].pop("batch_sampler", None)
    loaders = {s: build_dataloader(data_cfg, s, ds, train=False) for s, ds in datasets.items()}
    # decoders: those of -c, else the checkpoint's; dotted decoders.* overrides apply to them
    decoder_cfg = apply_overrides(
        {"decoders": eval_cfg.get("decoders", config.get("decoders")) or {}},
        [o for o in args.overrides if o.startswith("decoders")],
    )
    names = None if args.decoders == "all" else [d.strip() for d in args.decoders.split(",") if d.strip()]
    decoders = build_decoders(decoder_cfg, encoder, names)
    if args.timestamps and args.timestamps not in decoders:
        raise ConfigError(
            f"--timestamps names decoder {args.timestamps!r}, which is not decoded; decoded: {sorted(decoders)}"
        )
    result = evaluate(model, encoder, loaders, decoders, device, args.timestamps, sample_rate)
    return {"checkpoint": str(args.resume), **result}


def onnx_model(args: argparse.Namespace, model: torch.nn.Module, encoder: BaseTextEncoder) -> OnnxCTCModel:
    """The exported graph (``--onnx``, else the checkpoint's path with ``.onnx``) in place of ``model``."""
    path = Path(args.onnx) if args.onnx else Path(args.resume).with_suffix(".onnx")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no ONNX export of {args.resume}; write it with "
            f"python -m hw_asr.tools.export_onnx -r {args.resume} -o {path}, or name one with --onnx"
        )
    exported = OnnxCTCModel(path, threads=args.threads, frontend=model.frontend)
    if exported.n_tokens != len(encoder):
        raise ConfigError(
            f"{path} outputs {exported.n_tokens} tokens but {args.resume}'s text encoder has {len(encoder)}: "
            "it was exported from another model"
        )
    logger.info("runtime: onnxruntime on the CPU with %s", path)
    return exported


def pick_splits(config: Mapping[str, Any], wanted: str | None = None) -> list[str]:
    """The splits to evaluate: ``wanted`` (comma-separated names), else every split but ``train``."""
    available = list(config.get("data") or {})
    if wanted:
        names = [s.strip() for s in wanted.split(",") if s.strip()]
        unknown = [s for s in names if s not in available]
        if unknown:
            raise ConfigError(f"--splits names {unknown}, which the config does not have; it has: {available}")
        return names
    splits = eval_splits(config)
    if not splits:
        raise ConfigError("no evaluation splits: the config's 'data' has only 'train'; use -t, -c, or --splits train")
    return splits


def summary_line(result: Mapping[str, Any]) -> str:
    counts = result["counts"]
    return (
        f"{counts['decoded']} utterances decoded, {counts['scored']} scored against a transcript, "
        f"{counts['skipped']} skipped"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="test.py", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-r",
        "--resume",
        required=True,
        help="checkpoint (.pth), run folder (its model_best.pth, else its newest checkpoint) or "
        "confidence-ensemble file (hw_asr.ensemble.build) to evaluate",
    )
    parser.add_argument("-o", "--output", default="result.json", help="where to write the JSON")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("-t", "--test-data-folder", help="folder of audio files (+ optional .txt transcripts)")
    src.add_argument(
        "-c",
        "--config",
        help="JSON whose 'data' splits other than train are evaluated (its 'decoders' too, else the checkpoint's)",
    )
    parser.add_argument(
        "--splits",
        help="comma-separated split names to evaluate, train included if named (default: every split but train)",
    )
    parser.add_argument("-b", "--batch-size", type=int, default=8)
    parser.add_argument("-d", "--device", default="auto")
    parser.add_argument(
        "--decoders",
        default="all",
        help="comma-separated decoder names: argmax and those under 'decoders' in the checkpoint's "
        "config (or -c); default: all of them",
    )
    parser.add_argument(
        "--timestamps",
        nargs="?",
        const="argmax",
        default=None,
        help="add words with start/end seconds and confidences to every row, from this decoder's hypothesis "
        "aligned to the frames (default: argmax)",
    )
    parser.add_argument(
        "--runtime",
        choices=["torch", "onnx"],
        default="torch",
        help="run the model with PyTorch, or its ONNX export with onnxruntime on the CPU (hw_asr.tools.export_onnx)",
    )
    parser.add_argument("--onnx", help="the ONNX file for --runtime onnx (default: the checkpoint's path, .onnx)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime's threads (default: every core)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides applied to the evaluation config")
    args = parser.parse_args(argv)
    if args.timestamps and "=" in args.timestamps:  # "--timestamps key=value": an override, not a decoder
        args.overrides.insert(0, args.timestamps)
        args.timestamps = "argmax"
    setup_logging()

    device = pick_device("cpu" if args.runtime == "onnx" else args.device)
    # kept freed memory, as in training: on for the CPU unless trainer.keep_freed_memory=false is given
    host_memory = [o for o in args.overrides if o.partition("=")[0].strip() == "trainer.keep_freed_memory"]
    configure_host_memory(get_path(apply_overrides({}, host_memory), "trainer.keep_freed_memory", None), device)
    args.resume = find_checkpoint(args.resume, prefer_best=True)
    state = safe_torch_load(args.resume)  # read once: a checkpoint or an ensemble file
    if isinstance(state, dict) and state.get("format") == ENSEMBLE_FORMAT:
        if args.timestamps:
            raise ConfigError("--timestamps works with a single checkpoint, not a confidence ensemble")
        if args.runtime == "onnx":
            raise ConfigError("--runtime onnx works with a single checkpoint, not a confidence ensemble")
        result = run_ensemble(args, device, state)
        print(f"routed: {result['ensemble']['routed']}")
    else:
        result = run_checkpoint(args, device, state)
    write_json(args.output, result)
    for d, m in result["decoders"].items():
        print(f"{d:>10}: WER {fmt(m['WER'])}  CER {fmt(m['CER'])}")
    print(summary_line(result))
    for row in result["skipped"][:10]:
        print(f"  skipped {row['audio_path']}: {row['reason']}")
    if len(result["skipped"]) > 10:
        print(f"  ... {len(result['skipped']) - 10} more under 'skipped' in {args.output}")
    print(f"wrote {args.output}")
    return result


def fmt(value: float | None) -> str:
    return "  n/a " if value is None or value != value else f"{value:.4f}"
