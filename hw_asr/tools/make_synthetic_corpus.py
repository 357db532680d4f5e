"""Build a multi-voice synthetic speech corpus with the offline TTS engines from apt.

    python -m hw_asr.tools.make_synthetic_corpus --language en --out data/synthetic_en \\
        --sources bible fortunes --utterances-per-voice 200
    python -m hw_asr.tools.make_synthetic_corpus --language ru --out data/synthetic_ru \\
        --sources fortunes-ru --utterances-per-voice 200

Engines: ``espeak`` (espeak-ng voices with ``+variant``), ``flite`` (slt, rms, awb,
kal16, kal) and ``festival`` (kal_diphone, ked_diphone); only espeak-ng speaks
Russian. A voice is named ``engine:voice``, e.g. ``espeak:en-gb+f3`` or
``flite:slt``. Every utterance gets a random speaking rate (``--speed``) and pitch
(``--pitch`` semitones; espeak-ng sets it itself, the other engines get the
project's phase-vocoder pitch shift). Audio is written as 16 kHz 16-bit FLAC under
``<out>/audio/<voice>/``, with ``train.jsonl`` and ``test.jsonl`` (and ``dev.jsonl``
with ``--dev-voices``) manifests split **by voice** (``--test-voices``, default:
about a fifth of the voices, at least one) and by sentence (no two splits share a
sentence).

Text comes from ``--text`` files (one sentence or paragraph per line) and/or
``--sources`` (Debian packages ``bible-kjv``, ``fortunes``, ``fortunes-ru``); it
is split into sentences, normalised, and kept when it has ``--min-words`` to
``--max-words`` words and no character outside the language's alphabet. Missing
engines and packages are installed with apt-get when run as root; otherwise the
command lists what to install. A rerun skips utterances already written, so an
interrupted build resumes.
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from hw_asr.files import atomic_write_text
from hw_asr.text_encoder.base import BaseTextEncoder
from hw_asr.tools import make_lm_corpus
from hw_asr.tools.apt import apt_install

SAMPLE_RATE = 16000
ENGINES = {  # engine -> (executable, apt packages)
    "espeak": ("espeak-ng", ["espeak-ng"]),
    "flite": ("flite", ["flite"]),
    "festival": ("text2wave", ["festival", "festvox-kallpc16k", "festvox-kdlpc16k"]),
}
DEFAULT_VOICES = {
    "en": [
        "espeak:en-us",
        "espeak:en-gb",
        "espeak:en-gb-scotland",
        "espeak:en-gb-x-rp",
        "espeak:en-029",
        "espeak:en-us+f3",
        "espeak:en-us+m3",
        "espeak:en-gb+f2",
        "espeak:en-gb-x-rp+m5",
        "flite:slt",
        "flite:rms",
        "flite:awb",
        "flite:kal16",
        "flite:kal",
        "festival:kal_diphone",
        "festival:ked_diphone",
    ],
    "ru": [
        "espeak:ru",
        "espeak:ru+f2",
        "espeak:ru+f3",
        "espeak:ru+f4",
        "espeak:ru+m2",
        "espeak:ru+m3",
        "espeak:ru+m5",
        "espeak:ru+m7",
        "espeak:ru-lv",
        "espeak:ru-lv+f3",
    ],
}
TEXT_SOURCES = ["bible", "fortunes", "fortunes-ru"]  # of make_lm_corpus's sources, those made of sentences
SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def check_engines(voices: Sequence[str], install: bool = True) -> None:
    """Make sure every engine the voices need is there; exit listing what is missing."""
    engines = sorted({parse_voice(v)[0] for v in voices})
    missing = [e for e in engines if shutil.which(ENGINES[e][0]) is None]
    if missing and install:
        apt_install([p for e in missing for p in ENGINES[e][1]], "speech synthesis")
        missing = [e for e in engines if shutil.which(ENGINES[e][0]) is None]
    if missing:
        sys.exit(
            "TTS engines not found: "
            + ", ".join(
                f"{e} (executable {ENGINES[e][0]!r}, apt-get install {' '.join(ENGINES[e][1])})" for e in missing
            )
        )


def parse_voice(spec: str) -> tuple[str, str]:
    engine, sep, voice = spec.partition(":")
    if not sep or engine not in ENGINES or not voice:
        raise ValueError(f"voice {spec!r} must be 'engine:voice' with engine one of {sorted(ENGINES)}")
    return engine, voice


def voice_slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")


def select_sentences(lines: Iterable[str], encoder: BaseTextEncoder, min_words: int, max_words: int) -> list[str]:
    """Unique normalised sentences within the length range and the alphabet, in first-seen order."""
    seen, out = set(), []
    for line in lines:
        for sentence in SENTENCE_END.split(line):
            text = encoder.normalize(sentence)
            n = len(text.split())
            if not (min_words <= n <= max_words) or encoder.unknown_chars(text) or text in seen:
                continue
            seen.add(text)
            out.append(text)
    return out


def synthesize(engine: str, voice: str, text: str, speed: float, pitch: float, out_wav: str | os.PathLike) -> float:
    """Write ``text`` spoken by ``engine:voice`` to ``out_wav``; returns the pitch shift still
    to apply in semitones (engines other than espeak-ng cannot shift pitch themselves)."""
    if engine == "espeak":
        # espeak-ng: -s words per minute (175 is its default), -p pitch 0..99 (50 default)
        espeak_pitch = int(np.clip(50 + pitch * 6, 0, 99))
        cmd = [
            "espeak-ng",
            "-v",
            voice,
            "-s",
            str(int(round(175 * speed))),
            "-p",
            str(espeak_pitch),
            "-w",
            str(out_wav),
            text,
        ]
        remaining = 0.0
    elif engine == "flite":
        cmd = [
            "flite",
            "-voice",
            voice,
            "--setf",
            f"duration_stretch={1.0 / speed:.3f}",
            "-t",
            text,
            "-o",
            str(out_wav),
        ]
        remaining = pitch
    else:
        script = Path(out_wav).with_suffix(".txt")
        script.write_text(text + "\n", encoding="utf-8")
        cmd = [
            "text2wave",
            "-o",
            str(out_wav),
            "-eval",
            f"(voice_{voice})",
            "-eval",
            f"(Parameter.set 'Duration_Stretch {1.0 / speed:.3f})",
            str(script),
        ]
        remaining = pitch
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not Path(out_wav).is_file():
        raise RuntimeError(f"{engine}:{voice} failed on {text!r}: {result.stderr.strip()[-500:]}")
    return remaining


def render(job: dict) -> dict | str:
    """Synthesise one utterance to FLAC (atomically); returns its manifest row, or an error string."""
    import torch

    from hw_asr.audio import load_audio
    from hw_asr.augmentations.wave import pitch_shift

    torch.set_num_threads(1)
    out_path = Path(job["path"])
    if not out_path.is_file():
        engine, voice = parse_voice(job["voice"])
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "x.wav"
            try:
                remaining = synthesize(engine, voice, job["text"], job["speed"], job["pitch"], wav)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                return f"{out_path}: {e}"
            audio = torch.from_numpy(load_audio(wav, SAMPLE_RATE))
            if remaining:
                audio = pitch_shift(audio, SAMPLE_RATE, remaining)
            peak = float(audio.abs().max()) if audio.numel() else 0.0
            if peak < 1e-4:
                return f"{out_path}: the engine wrote silence"
            audio = audio * min(1.0, 0.95 / peak)
            part = out_path.with_name(out_path.name + ".part")
            sf.write(part, audio.numpy(), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
            os.replace(part, out_path)
    info = sf.info(str(out_path))
    return {
        "audio_filepath": str(out_path.relative_to(job["root"])),
        "text": job["text"],
        "duration": round(info.frames / info.samplerate, 3),
        "voice": job["voice"],
        "speed": job["speed"],
        "pitch": job["pitch"],
    }


def plan(
    sentences: Sequence[str],
    voices: Sequence[str],
    held_out: Sequence[str],
    per_voice: int,
    speed: float,
    pitch: float,
    seed: int,
    root: str | os.PathLike,
) -> list[dict]:
    """Jobs for every (voice, sentence). ``held_out`` maps voices to ``"test"`` or ``"dev"``
    (the rest are ``"train"``); each split reads sentences no other split sees."""
    rng = random.Random(seed)
    order = list(sentences)
    rng.shuffle(order)
    splits = {v: held_out.get(v, "train") for v in voices}
    pools, start = {}, 0
    for split in ("test", "dev"):
        n = sum(1 for v in voices if splits[v] == split) * per_voice
        pools[split], start = order[start : start + n], start + n
    pools["train"] = order[start:]
    if not pools["train"] or start > len(order):
        raise ValueError(f"{len(sentences)} sentences are too few for {len(voices)} voices x {per_voice}")
    jobs, cursor = [], dict.fromkeys(pools, 0)
    for v in voices:
        split = splits[v]
        pool = pools[split]
        for k in range(per_voice):
            text = pool[cursor[split] % len(pool)]
            cursor[split] += 1
            name = f"{voice_slug(v)}_{k:05d}.flac"
            jobs.append(
                {
                    "split": split,
                    "voice": v,
                    "text": text,
                    "root": str(root),
                    "speed": round(rng.uniform(*speed), 3),
                    "pitch": round(rng.uniform(*pitch), 2),
                    "path": str(root / "audio" / voice_slug(v) / name),
                }
            )
    return jobs


def default_test_voices(voices: Sequence[str]) -> list[str]:
    """About a fifth of the voices, spread over the engines, at least one."""
    n = max(1, round(len(voices) / 5))
    by_engine = {}
    for v in voices:
        by_engine.setdefault(parse_voice(v)[0], []).append(v)
    picked, i = [], 0
    while len(picked) < n:
        for group in by_engine.values():
            if i < len(group) and len(picked) < n and len(group) > 1:
                picked.append(group[-1 - i])
        i += 1
        if i > len(voices):
            break
    return picked or voices[-1:]


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--language", choices=sorted(DEFAULT_VOICES), default="en")
    parser.add_argument("--text", nargs="*", default=[], help="text files, one sentence or paragraph per line")
    parser.add_argument(
        "--sources",
        nargs="*",
        default=None,
        choices=TEXT_SOURCES,
        help="Debian text packages (default: bible+fortunes for en, fortunes-ru for ru, unless --text is given)",
    )
    parser.add_argument("--voices", nargs="*", help="engine:voice list (default: every voice for the language)")
    parser.add_argument("--test-voices", nargs="*", help="voices held out for test.jsonl")
    parser.add_argument("--dev-voices", nargs="*", default=[], help="voices held out for dev.jsonl (default: none)")
    parser.add_argument("--utterances-per-voice", type=int, default=100)
    parser.add_argument("--min-words", type=int, default=4)
    parser.add_argument("--max-words", type=int, default=20)
    parser.add_argument("--speed", type=float, nargs=2, default=(0.85, 1.15), metavar=("MIN", "MAX"))
    parser.add_argument(
        "--pitch",
        type=float,
        nargs=2,
        default=(-3.0, 3.0),
        metavar=("MIN", "MAX"),
        help="pitch offset range in semitones",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-install", action="store_true", help="never call apt-get")
    args = parser.parse_args(argv)

    from hw_asr.text_encoder import CTCCharTextEncoder

    voices = args.voices or DEFAULT_VOICES[args.language]
    for v in voices:
        parse_voice(v)
    test_voices = args.test_voices if args.test_voices is not None else default_test_voices(voices)
    unknown = sorted((set(test_voices) | set(args.dev_voices)) - set(voices))
    if unknown:
        sys.exit(f"--test-voices/--dev-voices not among the voices: {unknown}")
    if set(test_voices) & set(args.dev_voices):
        sys.exit(f"voices both in --test-voices and --dev-voices: {sorted(set(test_voices) & set(args.dev_voices))}")
    check_engines(voices, install=not args.no_install)
    sources = args.sources
    if sources is None:
        sources = [] if args.text else (["fortunes-ru"] if args.language == "ru" else ["bible", "fortunes"])
    if not sources and not args.text:
        sys.exit("no text: give --text files and/or --sources")

    encoder = CTCCharTextEncoder(args.language)

    def lines() -> Iterator[str]:
        for path in args.text:
            yield from Path(path).read_text(encoding="utf-8").splitlines()
        for source in sources:
            yield from make_lm_corpus.source_lines(source)

    sentences = select_sentences(lines(), encoder, args.min_words, args.max_words)
    root = Path(args.out).resolve()
    try:
        held_out = {**{v: "test" for v in test_voices}, **{v: "dev" for v in args.dev_voices}}
        jobs = plan(sentences, voices, held_out, args.utterances_per_voice, args.speed, args.pitch, args.seed, root)
    except ValueError as e:
        sys.exit(str(e))
    for v in voices:
        (root / "audio" / voice_slug(v)).mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "test": []}
    if args.dev_voices:
        rows["dev"] = []
    failures = []
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for job, row in zip(jobs, tqdm(pool.map(render, jobs, chunksize=8), total=len(jobs), desc="synthesising")):
            if isinstance(row, str):
                failures.append(row)
            else:
                rows[job["split"]].append(row)
    for split, split_rows in rows.items():
        atomic_write_text(
            root / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows)
        )
    summary = {
        "language": args.language,
        "voices": voices,
        "test_voices": sorted(test_voices),
        "dev_voices": sorted(args.dev_voices),
        "sentences_available": len(sentences),
        **{split: len(split_rows) for split, split_rows in rows.items()},
        "hours": round(sum(r["duration"] for s in rows.values() for r in s) / 3600, 3),
        "failures": len(failures),
    }
    (root / "corpus.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for failure in failures[:20]:
        print(f"warning: {failure}", file=sys.stderr)
    counts = " + ".join(f"{len(r)} {split}" for split, r in rows.items())
    print(f"wrote {counts} utterances ({summary['hours']} h, {len(failures)} failed) to {root}")
    return summary


if __name__ == "__main__":
    main()
