"""Word timestamp accuracy against known boundaries: espeak-ng speaks each word on its own, the words
are joined with silences of known length, and the words' times from the forced alignment of the
transcript (``hw_asr.alignment.align_words``, what ``test.py --timestamps`` writes) are compared with
where each word really starts and ends.

    python benchmarks/timestamps.py -r checkpoints/<run>/model_best.pth [--voice en-us] [--seed 0] \\
        [--text sentences.txt] [--output timestamps.json]

A word's true extent is its synthesised audio with the silence espeak-ng puts around it trimmed
(5 ms frames whose RMS is more than ``--trim-db`` below the word's loudest frame). Gaps between
words are drawn uniformly from ``--gap`` seconds, 0.3 s of silence lead and trail each utterance, and
the whole signal gets a white-noise floor (``--noise``, std) so that silence is not digital zero.
Errors are reported in output frames (the frontend hop times the model's time reduction): predicted
minus true start and end of each word, mean, mean absolute, median absolute, and the share of
boundaries within 1 and 2 frames. The greedy WER on the same audio says how well the model hears
this voice at all.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hw_asr.alignment import align_words, output_frame_seconds  # noqa: E402
from hw_asr.audio import load_audio  # noqa: E402
from hw_asr.builder import load_model  # noqa: E402
from hw_asr.inference import decode_batch  # noqa: E402
from hw_asr.metric import WERMetric  # noqa: E402
from hw_asr.schema import sample_rate  # noqa: E402

SENTENCES = [
    "the old man walked slowly along the river bank",
    "she opened the window and looked at the garden",
    "a small boat was waiting near the bridge",
    "they could hear the wind in the tall trees",
    "he wrote a long letter to his brother",
    "the children played in the field until dark",
    "my father kept his books in a wooden box",
    "we found the road closed after the storm",
    "the captain gave orders to the sailors",
    "her voice was soft and very clear",
    "nobody knew where the money had gone",
    "the horse stopped at the edge of the forest",
]


def speak_word(word, voice, sample_rate, folder):
    """One word spoken by espeak-ng, float32 mono at ``sample_rate``."""
    wav = Path(folder) / "word.wav"
    result = subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), word], capture_output=True, text=True)
    if result.returncode != 0 or not wav.is_file():
        raise RuntimeError(f"espeak-ng -v {voice} failed on {word!r}: {result.stderr.strip()[-300:]}")
    return load_audio(wav, sample_rate)


def trim(audio, sample_rate, trim_db=40.0, frame_s=0.005):
    """``audio`` without the leading and trailing frames more than ``trim_db`` below its loudest frame."""
    n = max(1, int(frame_s * sample_rate))
    frames = len(audio) // n
    if frames == 0:
        return audio
    rms = np.sqrt((audio[: frames * n].reshape(frames, n) ** 2).mean(1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-trim_db / 20))
    return audio[loud[0] * n : (loud[-1] + 1) * n]


def build_utterance(words, rng, sample_rate, gap=(0.1, 0.5), edge=0.3, noise=3e-4, trim_db=40.0):
    """``(audio, [(word, start_s, end_s), ...])``: the trimmed words (``words`` maps each word to its
    audio) joined by silences drawn from ``gap``, with ``edge`` seconds before and after."""
    pieces, truth = [], []
    t = int(edge * sample_rate)
    pieces.append(np.zeros(t, dtype=np.float32))
    for i, (word, audio) in enumerate(words):
        if i:
            silence = int(rng.uniform(*gap) * sample_rate)
            pieces.append(np.zeros(silence, dtype=np.float32))
            t += silence
        spoken = trim(audio, sample_rate, trim_db)
        truth.append((word, t / sample_rate, (t + len(spoken)) / sample_rate))
        pieces.append(spoken.astype(np.float32))
        t += len(spoken)
    pieces.append(np.zeros(int(edge * sample_rate), dtype=np.float32))
    signal = np.concatenate(pieces)
    signal = signal + rng.normal(0.0, noise, len(signal)).astype(np.float32)
    return signal, truth


@torch.no_grad()
def measure(model, encoder, utterances, sample_rate):
    """Per-word boundary errors in output frames and the greedy hypotheses of ``utterances``
    (``[(audio, truth), ...]``)."""
    starts, ends, refs, hyps, unaligned = [], [], [], [], 0
    for audio, truth in utterances:
        x = torch.from_numpy(audio).reshape(1, -1)
        length = torch.tensor([x.shape[1]])
        out = model(x, length)
        lp, n = out["log_probs"], out["log_probs_length"]
        frame_s = output_frame_seconds(model, length, n, sample_rate)
        text = " ".join(w for w, _, _ in truth)
        refs.append(text)
        hyps.append(decode_batch(lp, n, encoder, {"argmax": None})["argmax"][0])
        words = align_words(lp[0, : int(n[0])], text, encoder, frame_s)
        if not words:
            unaligned += 1
            continue
        for got, (_, start, end) in zip(words, truth):
            starts.append((got["start"] - start) / frame_s)
            ends.append((got["end"] - end) / frame_s)
    return starts, ends, refs, hyps, unaligned, frame_s


def summary(errors):
    absolute = [abs(e) for e in errors]
    return {
        "mean": statistics.fmean(errors),
        "mean_abs": statistics.fmean(absolute),
        "median_abs": statistics.median(absolute),
        "within_1": sum(a <= 1 for a in absolute) / len(absolute),
        "within_2": sum(a <= 2 for a in absolute) / len(absolute),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--resume", required=True, help="checkpoint")
    parser.add_argument("--text", default=None, help="sentences, one per line (default: 12 built-in ones)")
    parser.add_argument("--voice", default="en-us", help="espeak-ng voice")
    parser.add_argument("--gap", nargs=2, type=float, default=[0.1, 0.5], help="silence between words, s")
    parser.add_argument("--noise", type=float, default=3e-4, help="white-noise floor (std)")
    parser.add_argument("--trim-db", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    model, encoder, config = load_model(args.resume)
    rate = sample_rate(config)
    sentences = Path(args.text).read_text().splitlines() if args.text else SENTENCES
    sentences = [encoder.normalize(s) for s in sentences if s.strip()]
    rng = np.random.default_rng(args.seed)
    cache, utterances = {}, []
    with tempfile.TemporaryDirectory() as folder:
        for sentence in sentences:
            words = []
            for word in sentence.split():
                if word not in cache:
                    cache[word] = speak_word(word, args.voice, rate, folder)
                words.append((word, cache[word]))
            utterances.append(
                build_utterance(words, rng, rate, tuple(args.gap), noise=args.noise, trim_db=args.trim_db)
            )
    starts, ends, refs, hyps, unaligned, frame_s = measure(model, encoder, utterances, rate)
    wer = WERMetric()
    wer.update(refs, hyps)
    result = {
        "checkpoint": args.resume,
        "voice": args.voice,
        "utterances": len(utterances),
        "words": len(starts),
        "unaligned_utterances": unaligned,
        "frame_ms": round(frame_s * 1000, 1),
        "greedy_wer": wer.result(),
        "start": summary(starts) if starts else None,
        "end": summary(ends) if ends else None,
    }
    print(
        f"{result['utterances']} utterances, {result['words']} words, output frame {result['frame_ms']} ms, "
        f"greedy WER {result['greedy_wer']:.3f}, {unaligned} not aligned"
    )
    print("| boundary | mean (frames) | mean abs | median abs | within 1 frame | within 2 frames |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("start", "end"):
        s = result[name]
        if s:
            print(
                f"| {name} | {s['mean']:+.2f} | {s['mean_abs']:.2f} | {s['median_abs']:.2f} "
                f"| {s['within_1']:.3f} | {s['within_2']:.3f} |"
            )
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
