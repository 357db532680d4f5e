"""Regenerate the bundled sample corpus (``hw_asr/data/sample``) with espeak-ng.

    python -m hw_asr.tools.make_sample [--out hw_asr/data/sample]

Needs ``espeak-ng`` (``apt-get install espeak-ng``). The output is deterministic
for a given espeak-ng version: each sentence is spoken by a fixed voice at a fixed
speed, resampled to 16 kHz and stored as 16-bit FLAC with a JSON-lines manifest.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from hw_asr.audio import load_audio

SAMPLE_RATE = 16000
SENTENCES = [
    "the cat sat on a warm mat",
    "green leaves fall in the autumn",
    "we walked home along the river",
    "she reads a book every night",
    "the train leaves at noon",
    "my brother plays the old piano",
    "a small bird sings near the window",
    "please close the door behind you",
    "the sun rose over quiet hills",
    "they built a boat out of wood",
    "bright stars shine above the sea",
    "he could not find his keys",
    "fresh bread smells very good",
    "the children laughed at the clown",
    "rain fell on the tin roof",
    "we'll meet again next summer",
]
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp"]
SPEEDS = [150, 165, 140, 175]


def synthesize(text: str, voice: str, speed: float, out_wav: str | os.PathLike) -> None:
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out_wav), text], check=True, capture_output=True
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "sample"))
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed; install it with: apt-get install -y espeak-ng")
    out = Path(args.out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SENTENCES):
            voice, speed = VOICES[i % len(VOICES)], SPEEDS[(i // len(VOICES)) % len(SPEEDS)]
            wav = Path(tmp) / "x.wav"
            synthesize(text, voice, speed, wav)
            audio = load_audio(wav, SAMPLE_RATE)
            name = f"sample_{i:02d}.flac"
            sf.write(out / "audio" / name, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
            (out / "audio" / f"sample_{i:02d}.txt").write_text(text + "\n", encoding="utf-8")
            lines.append(
                {
                    "audio_filepath": f"audio/{name}",
                    "text": text,
                    "duration": round(len(audio) / SAMPLE_RATE, 3),
                    "voice": voice,
                    "speed": speed,
                }
            )
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    print(f"wrote {len(lines)} utterances to {out}")


if __name__ == "__main__":
    main()
