"""A folder of audio files with optional same-named ``.txt`` transcripts (``test.py -t``)."""

import os
from pathlib import Path
from typing import Any

from hw_asr.audio import AUDIO_EXTENSIONS
from hw_asr.datasets.base_dataset import BaseDataset
from hw_asr.manifests import probe_row


class CustomDirAudioDataset(BaseDataset):
    """``audio_dir/<name>.<wav|flac|...>``; the transcript, if any, is
    ``transcription_dir/<name>.txt`` (default: beside the audio). Files without
    one are decoded but not scored."""

    allow_empty_text = True

    def __init__(
        self, audio_dir: str | os.PathLike, transcription_dir: str | os.PathLike | None = None, **kwargs: Any
    ) -> None:
        self.audio_dir = Path(audio_dir)
        if not self.audio_dir.is_dir():
            raise FileNotFoundError(f"audio folder not found: {self.audio_dir}")
        self.transcription_dir = Path(transcription_dir) if transcription_dir else self.audio_dir
        kwargs.setdefault("use_cache", False)
        super().__init__(**kwargs)

    def describe(self) -> str:
        return f"{self.name}({self.audio_dir})"

    def _build_index(self) -> tuple[list[dict], list[tuple[str, str]]]:
        rows, skipped = [], []
        for path in sorted(p for p in self.audio_dir.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS):
            txt = self.transcription_dir / f"{path.stem}.txt"
            text = txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""
            row, reason = probe_row(path, text)
            if row is None:
                skipped.append((str(path), reason))
            else:
                rows.append(row)
        if not rows and not skipped:
            raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {self.audio_dir}")
        return rows, skipped
