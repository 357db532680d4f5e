"""LJSpeech-1.1 layout: ``wavs/<id>.wav`` + ``metadata.csv`` (``id|raw text|normalised text``)."""

import os
import zlib
from pathlib import Path
from typing import Any

from hw_asr.datasets.base_dataset import BaseDataset, file_signature
from hw_asr.datasets.download import download_and_extract
from hw_asr.manifests import probe_row

URL = "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"


def is_test_id(utt_id: str, test_percent: float) -> bool:
    """Deterministic split by a hash of the id: stable for any subset of the corpus."""
    return zlib.crc32(utt_id.encode()) % 100 < test_percent


class LJSpeechDataset(BaseDataset):
    """``part``: ``train``, ``test`` (``test_percent`` of the ids, by hash) or ``all``."""

    def __init__(
        self,
        part: str = "train",
        data_dir: str | os.PathLike = "data/datasets/ljspeech",
        test_percent: float = 5,
        download: bool = True,
        **kwargs: Any,
    ) -> None:
        if part not in ("train", "test", "all"):
            raise ValueError(f"LJSpeechDataset part must be train, test or all, got {part!r}")
        self.part, self.test_percent = part, test_percent
        data_dir = Path(data_dir)
        root = next((c for c in (data_dir, data_dir / "LJSpeech-1.1") if (c / "metadata.csv").is_file()), None)
        if root is None:
            hint = f"Unpack LJSpeech-1.1.tar.bz2 so that {data_dir / 'LJSpeech-1.1' / 'metadata.csv'} and wavs/ exist."
            if not download:
                raise FileNotFoundError(f"LJSpeech not found in {data_dir}. {hint}")
            download_and_extract(URL, data_dir, manual_hint=hint)
            root = data_dir / "LJSpeech-1.1"
        self.root = root
        super().__init__(**kwargs)

    def describe(self) -> str:
        return f"{self.name}({self.part})"

    def _index_signature(self) -> list:
        return [file_signature((self.root / "metadata.csv").resolve()), self.part, self.test_percent]

    def _build_index(self) -> tuple[list[dict], list[tuple[str, str]]]:
        rows, skipped = [], []
        meta = self.root / "metadata.csv"
        for lineno, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
            fields = line.split("|")
            if len(fields) < 2:
                skipped.append((f"{meta}:{lineno}", "expected id|text|normalised text"))
                continue
            utt_id = fields[0]
            test = is_test_id(utt_id, self.test_percent)
            if (self.part == "train" and test) or (self.part == "test" and not test):
                continue
            text = fields[2] if len(fields) > 2 and fields[2].strip() else fields[1]
            row, reason = probe_row(self.root / "wavs" / f"{utt_id}.wav", text, where=f"{meta}:{lineno}")
            if row is None:
                skipped.append((f"{meta}:{lineno} ({utt_id}.wav)", reason))
            else:
                rows.append(row)
        return rows, skipped
