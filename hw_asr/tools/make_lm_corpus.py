"""Gather text for an offline word language model: a config's training transcripts plus
public-domain English from Debian packages. Never reads evaluation splits.

    python -m hw_asr.tools.make_lm_corpus -c configs/deepspeech2_mini_librispeech.json \\
        [data.train.datasets.0.args.data_dir=../shared/data/mini-librispeech ...] \\
        --sources transcripts bible fortunes gcide -o data/lm/mini_librispeech_corpus.txt

``key=value`` overrides change the config as they do for ``train.py`` (e.g. where its train split's
data is); put them before ``--sources``/``--text``/``--exclude`` or after ``--``.

Sources: ``transcripts`` (the ``train`` split of the config), ``bible`` (King James
Bible, Debian ``bible-kjv``), ``fortunes`` (Debian ``fortunes``), ``gcide`` (the GNU
Collaborative International Dictionary of English, Debian ``dict-gcide``; its
definitions and quotations), ``fortunes-ru`` (Russian, with ``--language ru``), and any
``--text`` files. ``--exclude`` names dev/test manifests whose sentences are dropped,
so that an LM built from the same public text as a synthetic test set does not
contain its sentences. Missing packages are installed with apt-get when run
as root; otherwise the command says what to install. Output: one normalised
sentence per line.
"""

import argparse
import gzip
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hw_asr.text_encoder.base import BaseTextEncoder
from hw_asr.tools.apt import apt_install

PACKAGES = {"bible": "bible-kjv", "fortunes": "fortunes", "gcide": "dict-gcide", "fortunes-ru": "fortunes-ru"}
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def bible_lines() -> Iterator[str]:
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        yield line.split(" ", 1)[1] if " " in line else line  # drop the "Ge1:1" reference


def fortunes_lines(
    folder: str | os.PathLike = "/usr/share/games/fortunes", drop_attribution: bool = False
) -> Iterator[str]:
    """One line per fortune of the files in ``folder``; optionally without "-- Author" lines."""
    for path in sorted(Path(folder).glob("*")):
        if path.suffix in (".dat", ".u8") or path.is_dir():
            continue
        for block in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            if drop_attribution:
                block = "\n".join(line for line in block.splitlines() if not line.strip().startswith("--"))
            yield " ".join(block.split())


def gcide_lines() -> Iterator[str]:
    text = gzip.open("/usr/share/dictd/gcide.dict.dz", "rt", encoding="utf-8", errors="replace").read()
    for paragraph in text.split("\n\n"):
        paragraph = re.sub(r"\\[^\\]*\\", " ", paragraph)  # pronunciations \Ab*di"ca\
        paragraph = re.sub(r"\[[^\]]*\]", " ", paragraph)  # etymologies [L. ...]
        paragraph = re.sub(r"\{[^}]*\}", " ", paragraph)
        yield " ".join(paragraph.split())


READERS = {
    "bible": bible_lines,
    "fortunes": fortunes_lines,
    "gcide": gcide_lines,
    "fortunes-ru": lambda: fortunes_lines("/usr/share/games/fortunes/ru", drop_attribution=True),
}


def source_lines(source: str) -> Iterable[str]:
    """Raw text lines of a Debian text package (installed first when missing)."""
    apt_install([PACKAGES[source]], f"the text source {source!r}")
    return READERS[source]()


def transcript_lines(config: dict[str, Any] | str | os.PathLike, split: str = "train") -> Iterator[str]:
    """Transcripts of ``split`` of a config (a loaded one, or the path of one)."""
    from hw_asr.builder import build_dataset
    from hw_asr.config import load_config
    from hw_asr.datasets.base_dataset import dataset_parts

    if split != "train":
        sys.exit("only the train split's transcripts may go into the LM")
    dataset = build_dataset(config if isinstance(config, dict) else load_config(config), split, None)
    for part in dataset_parts(dataset):
        for row in part.index:
            yield row["text"]


def excluded_texts(manifests: Sequence[str | os.PathLike], encoder: BaseTextEncoder) -> set[str]:
    """Normalised transcripts of manifests that must stay out of the LM (dev/test sets)."""
    import json

    texts = set()
    for manifest in manifests:
        for line in Path(manifest).read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.add(encoder.normalize(json.loads(line)["text"]))
    return texts


def main(argv: Sequence[str] | None = None) -> None:
    from hw_asr.config import ConfigError, apply_overrides, load_config
    from hw_asr.text_encoder import CTCCharTextEncoder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", help="config whose train split's transcripts are used")
    sources = ["transcripts", *READERS]
    parser.add_argument(
        "--sources",
        nargs="*",
        default=["transcripts", "bible", "fortunes", "gcide"],
        help=f"any of {', '.join(sources)}",
    )
    parser.add_argument("--text", nargs="*", default=[], help="more text files, one sentence or paragraph per line")
    parser.add_argument(
        "--language",
        choices=["en", "ru"],
        default="en",
        help="alphabet that every kept sentence must fit (ru folds \u0451 into \u0435)",
    )
    parser.add_argument(
        "--exclude", nargs="*", default=[], help="manifests (dev/test) whose sentences are left out of the corpus"
    )
    parser.add_argument(
        "--transcript-repeat",
        type=int,
        default=10,
        help="write each training transcript this many times (in-domain weight)",
    )
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config, as for train.py")
    args = parser.parse_args(argv)
    # "--sources bible key=value" hands the override to --sources: a source never contains "="
    args.overrides += [s for s in args.sources if "=" in s]
    args.sources = [s for s in args.sources if "=" not in s]
    unknown = [s for s in args.sources if s not in sources]
    if unknown:
        parser.error(f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(sources)}")
    if "transcripts" in args.sources and not args.config:
        parser.error("the transcripts source needs -c CONFIG")
    if args.overrides and not args.config:
        parser.error("key=value overrides need -c CONFIG")
    config = None
    if args.config:
        try:  # before the output is opened: a bad override stops the run here
            config = apply_overrides(load_config(args.config), args.overrides)
        except ConfigError as e:
            parser.error(str(e))
    encoder = CTCCharTextEncoder(args.language)
    excluded = excluded_texts(args.exclude, encoder)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    counts, dropped = {}, 0
    with open(tmp, "w", encoding="utf-8") as f:
        for source in [*args.sources, *args.text]:
            if source == "transcripts":
                lines = (t for t in transcript_lines(config) for _ in range(args.transcript_repeat))
            elif source in READERS:
                lines = source_lines(source)
            else:
                lines = Path(source).read_text(encoding="utf-8").splitlines()
            n = 0
            for line in lines:
                for sentence in SENTENCE_END.split(line):
                    sentence = encoder.normalize(sentence)
                    if len(sentence.split()) < 2 or encoder.unknown_chars(sentence):
                        continue
                    if sentence in excluded:
                        dropped += 1
                        continue
                    f.write(sentence + "\n")
                    n += 1
            counts[source] = n
    os.replace(tmp, out)
    print(
        f"wrote {out}: "
        + ", ".join(f"{k} {v} sentences" for k, v in counts.items())
        + (f"; {dropped} excluded (in --exclude manifests)" if args.exclude else "")
    )


if __name__ == "__main__":
    main()
