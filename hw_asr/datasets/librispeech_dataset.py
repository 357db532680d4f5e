"""LibriSpeech in its original layout: ``<part>/<speaker>/<chapter>/<id>.flac`` + ``*.trans.txt``."""

import logging
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hw_asr.datasets.base_dataset import BaseDataset, file_signature
from hw_asr.datasets.download import download_and_extract
from hw_asr.manifests import probe_row

logger = logging.getLogger(__name__)

OPENSLR = "https://www.openslr.org/resources"
URLS = {
    **{
        p: f"{OPENSLR}/12/{p}.tar.gz"
        for p in (
            "dev-clean",
            "dev-other",
            "test-clean",
            "test-other",
            "train-clean-100",
            "train-clean-360",
            "train-other-500",
        )
    },
    # Kaldi's mini LibriSpeech
    "dev-clean-2": f"{OPENSLR}/31/dev-clean-2.tar.gz",
    "train-clean-5": f"{OPENSLR}/31/train-clean-5.tar.gz",
}
ALIASES = {"train_all": ["train-clean-100", "train-clean-360", "train-other-500"]}


class LibrispeechDataset(BaseDataset):
    """A LibriSpeech part (``train-clean-100``, ``dev-clean``, ..., or ``train_all``).

    ``data_dir`` may hold the part directly or under ``LibriSpeech/``. A missing
    part is downloaded from OpenSLR when ``download`` is true.
    """

    def __init__(
        self, part: str, data_dir: str | os.PathLike = "data/datasets/librispeech", download: bool = True, **kwargs: Any
    ) -> None:
        self.data_dir = Path(data_dir)
        names = ALIASES.get(part, [part.replace("_", "-")])
        self.part = part
        self.roots = [self._find_or_fetch(name, download) for name in names]
        super().__init__(**kwargs)

    def describe(self) -> str:
        return f"{self.name}({self.part})"

    def _find_or_fetch(self, name: str, download: bool) -> Path:
        candidates = [self.data_dir / name, self.data_dir / "LibriSpeech" / name]
        for c in candidates:
            if c.is_dir():
                return c
        hint = (
            f"Put the part there by hand: unpack {name}.tar.gz so that "
            f"{candidates[1]}/<speaker>/<chapter>/*.flac exist, or point data_dir at a folder "
            f"that holds {name}/."
        )
        if name not in URLS:
            raise FileNotFoundError(
                f"LibriSpeech part {name!r} not found in {self.data_dir} and it has no known download address. {hint}"
            )
        if not download:
            raise FileNotFoundError(f"LibriSpeech part {name!r} not found in {self.data_dir}. {hint}")
        download_and_extract(URLS[name], self.data_dir, manual_hint=hint)
        if not candidates[1].is_dir():
            raise FileNotFoundError(f"download of {name} did not produce {candidates[1]}. {hint}")
        return candidates[1]

    def _transcripts(self) -> list[Path]:
        return sorted(p for root in self.roots for p in root.glob("*/*/*.trans.txt"))

    def _index_signature(self) -> list:
        return [file_signature(p.resolve()) for p in self._transcripts()]

    def _build_index(self) -> tuple[list[dict], list[tuple[str, str]]]:
        rows, skipped = [], []
        transcripts = self._transcripts()
        if not transcripts:
            raise FileNotFoundError(f"no *.trans.txt files under {', '.join(map(str, self.roots))}")
        for trans in tqdm(transcripts, desc=f"indexing {self.part}", leave=False):
            for lineno, line in enumerate(trans.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if not line.strip():
                    continue
                utt_id, _, text = line.partition(" ")
                row, reason = probe_row(trans.parent / f"{utt_id}.flac", text, where=f"{trans}:{lineno}")
                if row is None:
                    skipped.append((f"{trans}:{lineno} ({utt_id}.flac)", reason))
                else:
                    rows.append(row)
        return rows, skipped
