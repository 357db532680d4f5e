"""Golos (Russian): ``<subset>/manifest.jsonl`` + ``<subset>/files/*.wav`` for crowd and farfield."""

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hw_asr.datasets.manifest_dataset import ManifestDataset

logger = logging.getLogger(__name__)


class GolosDataset(ManifestDataset):
    """Golos subsets under ``data_dir`` (or ``data_dir/<split>``, e.g. ``train``/``test``).

    Use it with the Russian alphabet: ``{"type": "CTCCharTextEncoder", "args": {"alphabet": "ru"}}``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str | None = None,
        subsets: Sequence[str] = ("crowd", "farfield"),
        **kwargs: Any,
    ) -> None:
        root = Path(data_dir) / split if split else Path(data_dir)
        manifests = []
        for subset in subsets:
            m = root / subset / "manifest.jsonl"
            if m.is_file():
                manifests.append(m)
            else:
                logger.warning("GolosDataset: no %s, subset %r left out", m, subset)
        if not manifests:
            raise FileNotFoundError(
                f"no Golos manifest under {root} (looked for {', '.join(subsets)}/manifest.jsonl). "
                f"Download Golos from SberDevices' release and unpack it so that "
                f"{root}/crowd/manifest.jsonl exists."
            )
        super().__init__(manifest_path=manifests, **kwargs)
