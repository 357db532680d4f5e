"""NeMo-style JSON-lines manifests: one ``{"audio_filepath", "text", "duration"}`` per line."""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hw_asr.datasets.base_dataset import BaseDataset, file_signature
from hw_asr.manifests import read_manifest


class ManifestDataset(BaseDataset):
    """One or several JSON-lines manifests (``manifest_path``: a path or a list of paths)."""

    def __init__(self, manifest_path: str | os.PathLike | Sequence[str | os.PathLike], **kwargs: Any) -> None:
        paths = manifest_path if isinstance(manifest_path, (list, tuple)) else [manifest_path]
        self.manifests = [Path(p) for p in paths]
        for p in self.manifests:
            if not p.is_file():
                raise FileNotFoundError(f"manifest not found: {p}")
        super().__init__(**kwargs)

    def describe(self) -> str:
        return f"{self.name}({', '.join(map(str, self.manifests))})"

    def _index_signature(self) -> list:
        return [file_signature(p.resolve()) for p in self.manifests]

    def _build_index(self) -> tuple[list[dict], list[tuple[str, str]]]:
        rows, skipped = [], []
        for p in self.manifests:
            r, s = read_manifest(p)
            rows += r
            skipped += s
        return rows, skipped
