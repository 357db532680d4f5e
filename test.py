"""Evaluate a checkpoint: predictions per utterance and WER/CER per decoder, as one JSON.

    python test.py -r checkpoints/<run>/model_best.pth -o result.json            # the config's eval splits
    python test.py -r ... -o result.json -t path/to/folder                        # audio (+ same-named .txt)
    python test.py -r ... -o result.json -c eval.json                             # the "data" splits of eval.json

``-t`` takes a folder of audio files with optional same-named ``.txt``
transcripts, or a folder holding ``audio/`` and ``transcriptions/``.
"""
import argparse
import json
import logging
import os
import sys
from pathlib import Path


from hw_asr.builder import build_dataloader, build_dataset, build_decoders, build_model, eval_splits
from hw_asr.config import ConfigError, apply_overrides, load_config
from hw_asr.datasets import CustomDirAudioDataset
from hw_asr.logger import setup_logging
from hw_asr.metric import CERMetric, WERMetric, calc_cer, calc_wer
from hw_asr.text_encoder import text_encoder_from_state
from hw_asr.trainer.checkpoint import CheckpointError, load_checkpoint
from hw_asr.trainer.distributed import pick_device
from hw_asr.trainer.inference import predict

logger = logging.getLogger("test")


def load_model(checkpoint_path, device):
    """Model, text encoder and config from a checkpoint, ready for inference."""
    state = load_checkpoint(checkpoint_path)
    encoder = text_encoder_from_state(state["text_encoder"])
    model = build_model(state["config"], n_tokens=len(encoder))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), encoder, state["config"]


def folder_dataset(folder, encoder, sample_rate):
    folder = Path(folder)
    if (folder / "audio").is_dir():
        trans = folder / "transcriptions"
        return CustomDirAudioDataset(folder / "audio", trans if trans.is_dir() else None,
                                     text_encoder=encoder, sample_rate=sample_rate)
    return CustomDirAudioDataset(folder, text_encoder=encoder, sample_rate=sample_rate)


def evaluate(model, encoder, loaders, decoders, device):
    """Rows per utterance and aggregate WER/CER per decoder, per split and over all splits."""
    rows = []
    totals = {d: (WERMetric(decoder=d), CERMetric(decoder=d)) for d in decoders}
    per_split = {}
    for split, loader in loaders.items():
        split_metrics = {d: (WERMetric(decoder=d), CERMetric(decoder=d)) for d in decoders}
        for batch, _, hyps, _ in predict(model, loader, encoder, decoders, device, desc=f"test {split}"):
            for d in decoders:
                for m in (*split_metrics[d], *totals[d]):
                    m.update(batch["text"], hyps[d])
            for i, path in enumerate(batch["audio_path"]):
                row = {"split": split, "audio_path": path, "ground_truth": batch["text"][i]}
                for d in decoders:
                    row[f"pred_{d}"] = hyps[d][i]
                    if batch["text"][i] and hyps[d][i] is not None:
                        row[f"wer_{d}"] = calc_wer(batch["text"][i], hyps[d][i])
                        row[f"cer_{d}"] = calc_cer(batch["text"][i], hyps[d][i])
                rows.append(row)
        per_split[split] = {d: {"WER": w.result(), "CER": c.result()} for d, (w, c) in split_metrics.items()}
    aggregate = {d: {"WER": w.result(), "CER": c.result()} for d, (w, c) in totals.items()}
    return {"decoders": aggregate, "splits": per_split, "utterances": rows}


def write_json_atomic(obj, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--resume", required=True, help="checkpoint (.pth) to evaluate")
    parser.add_argument("-o", "--output", default="result.json", help="where to write the JSON")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("-t", "--test-data-folder", help="folder of audio files (+ optional .txt transcripts)")
    src.add_argument("-c", "--config", help="JSON whose 'data' splits are evaluated")
    parser.add_argument("-b", "--batch-size", type=int, default=8)
    parser.add_argument("-d", "--device", default="auto")
    parser.add_argument("--decoders", default="all",
                        help="comma-separated decoder names: argmax and those under 'decoders' in the checkpoint's "
                             "config (or -c); default: all of them")
    parser.add_argument("overrides", nargs="*", help="dotted overrides applied to the evaluation config")
    args = parser.parse_args(argv)
    setup_logging()

    device = pick_device(args.device)
    model, encoder, config = load_model(args.resume, device)
    sample_rate = config.get("sample_rate", 16000)
    eval_cfg = load_config(args.config) if args.config else config

    if args.test_data_folder:
        data_cfg = {"data": {"test": {"batch_size": args.batch_size}}}
        datasets = {"test": folder_dataset(args.test_data_folder, encoder, sample_rate)}
    else:
        data_cfg = apply_overrides(eval_cfg, args.overrides)
        data_cfg.setdefault("sample_rate", sample_rate)
        splits = list(data_cfg["data"]) if args.config else eval_splits(data_cfg)
        if not splits:
            raise ConfigError("no evaluation splits: the config's 'data' has only 'train'; use -t or -c")
        datasets = {s: build_dataset(data_cfg, s, encoder) for s in splits}
    for split in datasets:
        data_cfg["data"][split]["batch_size"] = args.batch_size
        data_cfg["data"][split].pop("batch_sampler", None)
    loaders = {s: build_dataloader(data_cfg, s, ds, train=False) for s, ds in datasets.items()}
    # decoders: those of -c, else the checkpoint's; dotted decoders.* overrides apply to them
    decoder_cfg = apply_overrides({"decoders": eval_cfg.get("decoders", config.get("decoders")) or {}},
                                  [o for o in args.overrides if o.startswith("decoders")])
    names = None if args.decoders == "all" else [d.strip() for d in args.decoders.split(",") if d.strip()]
    decoders = build_decoders(decoder_cfg, encoder, names)
    result = {"checkpoint": str(args.resume), **evaluate(model, encoder, loaders, decoders, device)}
    write_json_atomic(result, args.output)
    for d, m in result["decoders"].items():
        print(f"{d:>10}: WER {m['WER']:.4f}  CER {m['CER']:.4f}  ({len(result['utterances'])} utterances)")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
