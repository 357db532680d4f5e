"""Turn a downloaded ARPA word model into the files the decoders read.

    python -m hw_asr.tools.prepare_lm data/lm/4-gram.arpa.gz --out data/lm/librispeech_4gram [--no-binary]

LibriSpeech's OpenSLR-11 models are gzipped and upper case, while hw_asr's text
encoders emit lower case. This writes ``<out>.arpa`` (lower-cased), ``<out>.unigrams.txt``
(the model's vocabulary, read from its 1-gram section: pyctcdecode's unigram list and
flashlight-text's lexicon source) and ``<out>.bin`` (KenLM binary through ``build_binary``,
which :mod:`hw_asr.tools.build_lm` compiles once when missing). Each file is written
under a temporary name and renamed when complete; existing outputs are rebuilt only
with ``--force``.
"""

import argparse
import gzip
import os
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from hw_asr.tools.build_lm import arpa_to_binary

SPECIAL = {"<s>", "</s>", "<unk>"}


def _replace(part: str | os.PathLike, final: str | os.PathLike) -> Path:
    os.replace(part, final)
    return Path(final)


def lowercase_arpa(
    src: str | os.PathLike, out_arpa: str | os.PathLike, out_unigrams: str | os.PathLike
) -> tuple[Path, Path, int]:
    """Stream ``src`` (.arpa or .arpa.gz) into a lower-cased ARPA and its 1-gram vocabulary; returns both
    paths and the number of words."""
    src, out_arpa, out_unigrams = Path(src), Path(out_arpa), Path(out_unigrams)
    out_arpa.parent.mkdir(parents=True, exist_ok=True)
    words, section, seen_data = [], None, False
    part = out_arpa.with_name(out_arpa.name + ".part")
    try:
        with (
            open(src, "rb") as raw,
            open(part, "w", encoding="utf-8") as dst,
            tqdm(total=src.stat().st_size, unit="B", unit_scale=True, desc=f"lower-case {src.name}") as bar,
        ):
            stream = gzip.GzipFile(fileobj=raw) if src.name.endswith(".gz") else raw
            last = 0
            for i, line in enumerate(stream):
                text = line.decode("utf-8").lower()
                dst.write(text)
                stripped = text.strip()
                if stripped == "\\data\\":
                    seen_data = True
                elif stripped.startswith("\\") and stripped.endswith("-grams:"):
                    section = stripped
                elif section == "\\1-grams:" and stripped:
                    fields = stripped.split("\t") if "\t" in stripped else stripped.split()
                    if len(fields) < 2:
                        raise ValueError(f"{src}: line {i + 1}: not an ARPA 1-gram entry: {stripped[:80]!r}")
                    if fields[1] not in SPECIAL:
                        words.append(fields[1])
                if i % 100_000 == 0:
                    bar.update(raw.tell() - last)
                    last = raw.tell()
            bar.update(raw.tell() - last)
        if not seen_data or not words:
            raise ValueError(f"{src}: not an ARPA language model (no \\data\\ header or no 1-grams)")
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:
        part.unlink(missing_ok=True)
        raise SystemExit(f"error: {src}: {e}") from None
    unigram_part = out_unigrams.with_name(out_unigrams.name + ".part")
    unigram_part.write_text("\n".join(words) + "\n", encoding="utf-8")
    return _replace(part, out_arpa), _replace(unigram_part, out_unigrams), len(words)


def prepare(
    src: str | os.PathLike, out: str | os.PathLike, binary: bool = True, force: bool = False
) -> tuple[Path, Path, Path | None]:
    out = Path(out)
    arpa, unigrams, binary_path = Path(f"{out}.arpa"), Path(f"{out}.unigrams.txt"), Path(f"{out}.bin")
    if force or not (arpa.is_file() and unigrams.is_file()):
        _, _, n = lowercase_arpa(src, arpa, unigrams)
        print(f"{src} -> {arpa} and {unigrams} ({n} words)")
    else:
        print(f"have {arpa} and {unigrams}")
    if binary and (force or not binary_path.is_file()):
        arpa_to_binary(arpa, binary_path)
        print(f"-> {binary_path}")
    return arpa, unigrams, binary_path if binary else None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arpa", help="ARPA model, plain or .gz")
    parser.add_argument("--out", required=True, help="output prefix")
    parser.add_argument("--no-binary", action="store_true", help="skip the KenLM binary")
    parser.add_argument("--force", action="store_true", help="rebuild outputs that exist")
    args = parser.parse_args(argv)
    if not Path(args.arpa).is_file():
        parser.error(f"no such file: {args.arpa}")
    prepare(args.arpa, args.out, binary=not args.no_binary, force=args.force)


if __name__ == "__main__":
    main()
