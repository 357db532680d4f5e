"""Grid-search a decoder's LM weight (alpha) and word bonus (beta) on a dev split and write
the best pair into a config.

    python -m hw_asr.tools.tune_lm -r checkpoints/<run>/model_best.pth --decoder beam_lm \\
        --alpha 0.3 0.5 0.8 1.0 --beta 0 1 2 [--split val] [--limit 200] [--slice 0:46] [-o configs/tuned.json]

The model runs once over the split; every (alpha, beta) then re-decodes the stored
log-probs. The decoder block comes from the checkpoint's config (``decoders.<name>``),
overridable with dotted ``key=value``. The result table is printed and the best pair
is written to ``-o`` (default: ``tuned_config.json`` beside the checkpoint); evaluate with
``python test.py -r <checkpoint> -c <that config>``.
"""

import argparse
import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hw_asr.builder import build_dataloader, build_dataset, build_decoders, load_model
from hw_asr.config import apply_overrides, write_config
from hw_asr.inference import predict
from hw_asr.metric import CERMetric, WERMetric
from hw_asr.text_encoder.base import BaseTextEncoder


def parse_slice(text: str | None) -> slice:
    """``"START:STOP"`` (either may be empty) -> ``slice``; ``None`` -> everything."""
    if text is None:
        return slice(None)
    try:
        start, stop = (int(x) if x.strip() else None for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--slice must look like START:STOP (e.g. 0:46 or 46:), got {text!r}") from None
    return slice(start, stop)


def collect_log_probs(
    model: torch.nn.Module,
    encoder: BaseTextEncoder,
    config: Mapping[str, Any],
    split: str,
    device: torch.device,
    limit: int | None = None,
    part: str | None = None,
) -> list[tuple[np.ndarray, str]]:
    """``[(log_probs [T, V] float32 numpy, reference text), ...]`` for a split.

    ``part`` (a ``slice``) selects utterances in the order of their audio paths, so that
    tuning and reporting can use disjoint parts of one split (in LibriSpeech's layout,
    disjoint speakers), whatever order the loader yields them in."""
    cfg = json.loads(json.dumps(config))
    if limit is not None:
        for spec in cfg["data"][split]["datasets"]:
            spec.setdefault("args", {})["limit"] = limit
    dataset = build_dataset(cfg, split, encoder)
    loader = build_dataloader(cfg, split, dataset, train=False)
    items = []
    for batch, outputs, _, _ in predict(model, loader, encoder, {"argmax": None}, device, desc=f"log-probs {split}"):
        lp = outputs["log_probs"].float().cpu().numpy()
        for i, n in enumerate(outputs["log_probs_length"].tolist()):
            items.append((str(batch["audio_path"][i]), lp[i, :n], batch["text"][i]))
    items.sort(key=lambda item: item[0])
    return [(lp, text) for _, lp, text in items[part or slice(None)]]


def score(decoder: Any, items: Sequence[tuple[np.ndarray, str]], progress: bool = True) -> tuple[float, float]:
    """Corpus WER and CER of ``decoder`` (log-probs -> n-best) over ``(log_probs, reference)`` items."""
    wer, cer = WERMetric(), CERMetric()
    hyps = [decoder(lp)[0][0] for lp, _ in tqdm(items, leave=False, desc="decode", disable=not progress)]
    refs = [ref for _, ref in items]
    wer.update(refs, hyps)
    cer.update(refs, hyps)
    return wer.result(), cer.result()


def main(argv: Sequence[str] | None = None) -> tuple[float, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--resume", required=True)
    parser.add_argument("--decoder", required=True, help="name under 'decoders' in the config")
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.3, 0.5, 0.8, 1.0])
    parser.add_argument("--beta", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=None, help="tune on this many utterances of the split")
    parser.add_argument(
        "--slice",
        default=None,
        help="START:STOP of the split's utterances in audio-path order (e.g. 0:46 = dev-clean-5's first speaker)",
    )
    parser.add_argument("-o", "--output", help="config to write (default: tuned_config.json beside the checkpoint)")
    parser.add_argument("-d", "--device", default="cpu")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    model, encoder, config = load_model(args.resume, device)
    config = apply_overrides(config, args.overrides)
    items = collect_log_probs(model, encoder, config, args.split, device, args.limit, parse_slice(args.slice))
    spec = config.get("decoders", {}).get(args.decoder)
    if spec is None:
        raise SystemExit(
            f"no decoder {args.decoder!r} under 'decoders' in the config; add it with "
            f'decoders.{args.decoder}={{"type": ..., "args": {{...}}}}'
        )
    results = []
    print("| alpha | beta | WER | CER |\n|---:|---:|---:|---:|")
    for alpha, beta in itertools.product(args.alpha, args.beta):
        trial = {
            "decoders": {
                args.decoder: {"type": spec["type"], "args": {**spec.get("args", {}), "alpha": alpha, "beta": beta}}
            }
        }
        decoder = build_decoders(trial, encoder, [args.decoder])[args.decoder]
        wer, cer = score(decoder, items)
        results.append((wer, cer, alpha, beta))
        print(f"| {alpha:g} | {beta:g} | {wer:.4f} | {cer:.4f} |", flush=True)
    wer, cer, alpha, beta = min(results)
    config["decoders"][args.decoder]["args"].update({"alpha": alpha, "beta": beta})
    from pathlib import Path

    out = Path(args.output) if args.output else Path(args.resume).with_name("tuned_config.json")
    write_config(config, out)
    print(
        f"best: alpha {alpha:g}, beta {beta:g} (WER {wer:.4f}, CER {cer:.4f} on {len(items)} utterances "
        f"of {args.split}); written to {out}"
    )
    return alpha, beta


if __name__ == "__main__":
    main()
