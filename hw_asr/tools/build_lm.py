"""Build an n-gram word language model (ARPA + KenLM binary) from text files.

    python -m hw_asr.tools.build_lm --text corpus1.txt corpus2.txt --order 4 --prune 0 0 1 \\
        --out data/lm/mini_librispeech_4gram

writes ``<out>.arpa``, ``<out>.bin`` (KenLM binary) and ``<out>.unigrams.txt`` (the
vocabulary, for pyctcdecode). Lines are normalised like transcripts (lower case,
punctuation dropped) unless ``--no-normalize``.

KenLM's ``lmplz`` and ``build_binary`` are not packaged; when they are neither on
PATH nor in ``$HW_ASR_CACHE/kenlm/bin`` this command builds them: it installs the
Boost, zlib and cmake packages with apt-get (as root; otherwise it prints the
command to run) and compiles the kenlm source distribution from PyPI (sha256-checked),
which takes a few minutes once.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from hw_asr.datasets.base_dataset import cache_dir
from hw_asr.datasets.download import download_file
from hw_asr.text_encoder.base import normalize_text
from hw_asr.tools.apt import apt_install

KENLM_SDIST = (
    "https://files.pythonhosted.org/packages/02/6e/"
    "f4e159cef39ea4ef2244b4aa32857d447d60a5d0ee269e1b1f8d3723c03e/kenlm-0.3.0.tar.gz"
)
KENLM_SHA256 = "c4628bb9fb63c8a6f9240035b8b037385cfc404cb72e933cf48878291edac1e8"
APT_PACKAGES = [
    "build-essential",
    "cmake",
    "libboost-program-options-dev",
    "libboost-system-dev",
    "libboost-thread-dev",
    "libboost-test-dev",
    "zlib1g-dev",
    "libbz2-dev",
    "liblzma-dev",
]
TOOLS = ("lmplz", "build_binary")


def kenlm_bin_dir() -> Path:
    return cache_dir() / "kenlm" / "bin"


def find_tool(name: str) -> Path | None:
    found = shutil.which(name)
    if found:
        return Path(found)
    cached = kenlm_bin_dir() / name
    return cached if cached.is_file() else None


def install_build_deps() -> None:
    if shutil.which("cmake") and Path("/usr/include/boost/program_options.hpp").is_file():
        return
    apt_install(APT_PACKAGES, "building KenLM")


def ensure_kenlm_tools() -> dict[str, Path]:
    """Paths of lmplz and build_binary, building them once if needed."""
    if all(find_tool(t) for t in TOOLS):
        return {t: find_tool(t) for t in TOOLS}
    install_build_deps()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = download_file(
            KENLM_SDIST,
            tmp / "kenlm.tar.gz",
            sha256=KENLM_SHA256,
            manual_hint="Build KenLM yourself (github.com/kpu/kenlm) and put lmplz and "
            f"build_binary on PATH or in {kenlm_bin_dir()}.",
        )
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src = next(tmp.glob("kenlm-*"))
        build = src / "build"
        build.mkdir()
        print(f"compiling KenLM in {build} (a few minutes) ...", flush=True)
        subprocess.run(
            ["cmake", "..", "-DCMAKE_BUILD_TYPE=Release", "-DKENLM_MAX_ORDER=6"],
            cwd=build,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(["make", f"-j{os.cpu_count() or 2}", *TOOLS], cwd=build, check=True, stdout=subprocess.DEVNULL)
        kenlm_bin_dir().mkdir(parents=True, exist_ok=True)
        for t in TOOLS:
            shutil.copy2(build / "bin" / t, kenlm_bin_dir() / t)
    return {t: find_tool(t) for t in TOOLS}


def prepare_text(
    paths: Sequence[str | os.PathLike], out: str | os.PathLike, normalize: bool = True
) -> tuple[int, set[str]]:
    """One sentence per line, normalised; returns (lines, vocabulary)."""
    vocab, n = set(), 0
    with open(out, "w", encoding="utf-8") as f:
        for path in paths:
            with open(path, encoding="utf-8", errors="replace") as src:
                for line in src:
                    line = normalize_text(line) if normalize else line.strip()
                    if line:
                        f.write(line + "\n")
                        vocab.update(line.split())
                        n += 1
    return n, vocab


def arpa_to_binary(arpa: str | os.PathLike, binary: str | os.PathLike, tools: Mapping[str, Path] | None = None) -> Path:
    """KenLM's ``build_binary`` on ``arpa``, written to ``binary`` through ``<binary>.part``."""
    tools = tools or ensure_kenlm_tools()
    part = Path(f"{binary}.part")
    try:
        subprocess.run([str(tools["build_binary"]), str(arpa), str(part)], check=True, stdout=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, OSError):
        part.unlink(missing_ok=True)
        raise
    os.replace(part, binary)
    return Path(binary)


def build_lm(
    texts: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    order: int = 4,
    prune: Sequence[int] = (),
    normalize: bool = True,
    memory: str = "20%",
) -> tuple[Path, Path, Path]:
    tools = ensure_kenlm_tools()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        n, vocab = prepare_text(texts, corpus, normalize)
        if n == 0:
            raise SystemExit("no text lines to build a language model from")
        arpa_tmp = out.with_suffix(".arpa.part")
        cmd = [str(tools["lmplz"]), "-o", str(order), "-S", memory, "-T", tmp, "--discount_fallback"]
        if prune:
            cmd += ["--prune", *map(str, prune)]
        with open(corpus, "rb") as stdin, open(arpa_tmp, "wb") as stdout:
            subprocess.run(cmd, stdin=stdin, stdout=stdout, check=True)
        arpa = Path(f"{out}.arpa")
        os.replace(arpa_tmp, arpa)
        binary = arpa_to_binary(arpa, Path(f"{out}.bin"), tools)
    unigrams = Path(f"{out}.unigrams.txt")
    unigrams.write_text("\n".join(sorted(vocab)) + "\n", encoding="utf-8")
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    print(f"{n} lines, {len(vocab)} words -> {arpa}, {binary} (sha256 {digest}...), {unigrams}")
    return arpa, binary, unigrams


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", nargs="*", default=[], help="text files, one sentence per line")
    parser.add_argument("--order", type=int, default=4, choices=range(2, 7))
    parser.add_argument("--prune", type=int, nargs="*", default=[], help="lmplz --prune counts per order")
    parser.add_argument("--out", help="output prefix")
    parser.add_argument("--no-normalize", action="store_true")
    parser.add_argument("--install-only", action="store_true", help="only build lmplz/build_binary")
    args = parser.parse_args(argv)
    if args.install_only:
        print(ensure_kenlm_tools())
        return
    if not args.text or not args.out:
        parser.error("--text and --out are required")
    build_lm(args.text, args.out, args.order, args.prune, not args.no_normalize)


if __name__ == "__main__":
    main()
