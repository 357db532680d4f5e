"""Hot-word boosting: recall of rare names with and without boosting, and the WER it costs elsewhere.

    python benchmarks/hotwords.py -r checkpoints/<run>/model_best.pth \\
        --dev ../shared/data/mini-librispeech/LibriSpeech/dev-clean-5 \\
        --names AMELIA BECKY CRAWLEY DOBBIN ... [--beam 20] [--weights 0 1 2 4] [--pyctcdecode-weights 0 10]

The model's log-probs for every utterance of ``--dev`` (a LibriSpeech part folder) are computed
once. Each decoder setting then decodes all of them: our prefix beam search with
``hotword_weight`` in ``--weights`` and pyctcdecode's with those in ``--pyctcdecode-weights`` (0:
no hot words), both without a language model and with ``--names`` as the hot words. Reported:
recall of the names (occurrences in the hypotheses, capped per utterance at those in the
reference, over occurrences in the references), WER on the utterances that contain a name,
and WER on the rest (what boosting costs where there is nothing to boost).
"""

import argparse
import collections
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_asr.builder import load_model  # noqa: E402
from hw_asr.datasets import LibrispeechDataset  # noqa: E402
from hw_asr.metric import WERMetric  # noqa: E402
from hw_asr.schema import sample_rate  # noqa: E402
from hw_asr.text_encoder.decoders import PrefixBeamSearchDecoder, PyCTCDecodeDecoder  # noqa: E402


@torch.no_grad()
def log_probs_and_refs(model, dataset):
    """Each utterance's log-probs ``[T', V]`` and normalised transcript."""
    out, refs = [], []
    for i in tqdm(range(len(dataset)), desc="log-probs", leave=False):
        item = dataset[i]
        audio = item["audio"].reshape(1, -1)
        o = model(audio, torch.tensor([audio.shape[1]]))
        out.append(o["log_probs"][0, : int(o["log_probs_length"][0])])
        refs.append(item["text"])
    return out, refs


def name_counts(text, names):
    return collections.Counter(w for w in text.split() if w in names)


def score(refs, hyps, names):
    """Name recall, WER on utterances with a name, WER on the rest."""
    found = total = 0
    with_name, without = [], []
    for ref, hyp in zip(refs, hyps):
        want, got = name_counts(ref, names), name_counts(hyp, names)
        total += sum(want.values())
        found += sum(min(n, got[w]) for w, n in want.items())
        (with_name if want else without).append((ref, hyp))

    def corpus_wer(pairs):
        metric = WERMetric()
        metric.update([r for r, _ in pairs], [h for _, h in pairs])
        return metric.result()

    return {
        "recall": found / max(total, 1),
        "names": total,
        "wer_with_names": corpus_wer(with_name),
        "wer_rest": corpus_wer(without),
        "utts_with_names": len(with_name),
        "utts_rest": len(without),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--resume", required=True)
    parser.add_argument("--dev", required=True, help="LibriSpeech part folder")
    parser.add_argument("--names", nargs="+", required=True, help="the hot words (rare names of the dev set)")
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--weights", type=float, nargs="*", default=[0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--pyctcdecode-weights", type=float, nargs="*", default=[0.0, 10.0])
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    model, encoder, config = load_model(args.resume)
    dev = Path(args.dev)
    dataset = LibrispeechDataset(
        dev.name, data_dir=dev.parent, download=False, text_encoder=encoder, sample_rate=sample_rate(config)
    )
    names = {encoder.normalize(n) for n in args.names}
    log_probs, refs = log_probs_and_refs(model, dataset)
    settings = [("own prefix beam", w) for w in args.weights] + [("pyctcdecode", w) for w in args.pyctcdecode_weights]
    rows = []
    print(f"{len(refs)} utterances, {len(names)} names; beam {args.beam}, no LM\n")
    print("| decoder | hotword_weight | name recall | WER, utterances with names | WER, the rest |")
    print("|---|---:|---:|---:|---:|")
    for kind, weight in settings:
        hot = {"hotwords": sorted(names), "hotword_weight": weight} if weight else {}
        if kind == "pyctcdecode":
            decoder = PyCTCDecodeDecoder(encoder, beam_size=args.beam, **hot)
        else:
            decoder = PrefixBeamSearchDecoder(encoder, beam_size=args.beam, **hot)
        hyps = [decoder(lp.numpy())[0][0] for lp in tqdm(log_probs, leave=False)]
        r = {"decoder": kind, "weight": weight, **score(refs, hyps, names)}
        rows.append(r)
        print(
            f"| {kind} | {weight:g} | {r['recall']:.3f} ({round(r['recall'] * r['names'])}/{r['names']}) "
            f"| {r['wer_with_names']:.4f} ({r['utts_with_names']}) | {r['wer_rest']:.4f} ({r['utts_rest']}) |",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
