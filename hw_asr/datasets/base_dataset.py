"""Shared dataset machinery: cached index, validation of rows, filters, item loading.

A subclass only says how to list its corpus: ``_index_signature`` (what, when
changed, invalidates the cached index) and ``_build_index`` (rows of
``{"path", "text", "duration"}`` plus the rows it had to skip, with reasons).
"""

import hashlib
import json
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from hw_asr.audio import AudioError, load_audio
from hw_asr.files import atomic_write_text
from hw_asr.manifests import report_skipped
from hw_asr.text_encoder.base import BaseTextEncoder, normalize_text

logger = logging.getLogger(__name__)

MAX_LOAD_RETRIES = 10


def cache_dir() -> Path:
    return Path(os.environ.get("HW_ASR_CACHE", Path.home() / ".cache" / "hw_asr")).expanduser()


def file_signature(path: str | os.PathLike) -> list:
    st = os.stat(path)
    return [str(path), st.st_mtime_ns, st.st_size]


def dataset_parts(dataset: Dataset) -> list[Dataset]:
    """The datasets inside ``dataset`` (a ConcatDataset, nested or not), or ``[dataset]``."""
    if isinstance(dataset, ConcatDataset):
        return [part for d in dataset.datasets for part in dataset_parts(d)]
    return [dataset]


class BaseDataset(Dataset):
    """Items follow the dataset-item contract in docs/architecture.md:
    ``audio`` float32 [T], ``text``, ``text_encoded`` int64 [L], ``duration``, ``audio_path``.

    Filters: ``max_audio_length`` (seconds), ``max_text_length`` (characters),
    ``limit`` (a seeded random subset of that many rows).
    """

    allow_empty_text = False
    # what a file that fails to decode after indexing becomes: replaced by the next file (training: an
    # epoch never dies on one file; set by builder.build_dataset for the train split), or left out and
    # reported as ``{"load_error": (path, reason)}``, which collate_fn lists under the batch's ``skipped``
    # (evaluation never scores other audio in its place)
    replace_failed_files = False

    def __init__(
        self,
        text_encoder: BaseTextEncoder | None = None,
        sample_rate: int = 16000,
        limit: int | None = None,
        max_audio_length: float | None = None,
        max_text_length: int | None = None,
        wave_augs: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int = 42,
        use_cache: bool = True,
    ) -> None:
        self.text_encoder = text_encoder
        self.sample_rate = sample_rate
        self.wave_augs = wave_augs
        self.name = type(self).__name__
        rows, skipped = self._load_index(use_cache)
        rows, more_skipped = self._validate_texts(rows)
        skipped = skipped + more_skipped
        report_skipped(self.describe(), skipped)
        self.skipped = skipped
        rows = self._filter(rows, max_audio_length, max_text_length)
        if limit is not None:
            rows = sorted(rows, key=lambda r: r["path"])
            random.Random(seed).shuffle(rows)
            rows = rows[:limit]
        self.index = rows
        logger.info("%s: %d utterances, %.1f h", self.describe(), len(rows), sum(r["duration"] for r in rows) / 3600)

    # ---- to be provided by subclasses -------------------------------------------------
    def describe(self) -> str:
        return self.name

    def _index_signature(self) -> list | None:
        """JSON-able value that changes whenever the listed corpus changes; None: no cache."""
        return None

    def _build_index(self) -> tuple[list[dict], list[tuple[str, str]]]:
        """Return ``(rows, skipped)``; ``skipped`` is a list of ``(path_or_line, reason)``."""
        raise NotImplementedError

    # ---- index ------------------------------------------------------------------------
    def _load_index(self, use_cache: bool) -> tuple[list[dict], list[tuple[str, str]]]:
        signature = self._index_signature() if use_cache else None
        if signature is None:
            return self._build_index()
        key = hashlib.sha1(json.dumps([self.name, signature]).encode()).hexdigest()[:20]
        path = cache_dir() / "indexes" / f"{self.name}-{key}.json"
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("signature") == signature:
                return cached["rows"], [tuple(s) for s in cached["skipped"]]
        except (OSError, ValueError, KeyError):
            pass
        rows, skipped = self._build_index()
        try:
            atomic_write_text(path, json.dumps({"signature": signature, "rows": rows, "skipped": skipped}))
        except OSError as e:
            logger.warning("could not write index cache %s: %s", path, e)
        return rows, skipped

    def _validate_texts(self, rows: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
        kept, skipped, seen = [], [], {}
        normalize = normalize_text if self.text_encoder is None else self.text_encoder.normalize
        for row in rows:
            text = normalize(row["text"])
            where = f"{row['where']} ({row['path']})" if "where" in row else row["path"]
            if not text and not self.allow_empty_text:
                skipped.append((where, "empty transcript"))
                continue
            if self.text_encoder is not None:
                unknown = self.text_encoder.unknown_chars(text)
                if unknown:
                    skipped.append(
                        (
                            where,
                            f"characters {''.join(sorted(unknown))!r} are not in "
                            f"the text encoder's vocabulary: {text!r}",
                        )
                    )
                    continue
            if row["path"] in seen:
                skipped.append((where, f"duplicate: the same audio file as {seen[row['path']]}"))
                continue
            seen[row["path"]] = row.get("where", row["path"])
            kept.append({**row, "text": text})
        return kept, skipped

    def _filter(self, rows: list[dict], max_audio_length: float | None, max_text_length: int | None) -> list[dict]:
        out = rows
        if max_audio_length is not None:
            out = [r for r in out if r["duration"] <= max_audio_length]
            if len(out) < len(rows):
                logger.info(
                    "%s: %d utterances longer than %.1f s left out",
                    self.describe(),
                    len(rows) - len(out),
                    max_audio_length,
                )
        if max_text_length is not None:
            n = len(out)
            out = [r for r in out if len(r["text"]) <= max_text_length]
            if len(out) < n:
                logger.info(
                    "%s: %d transcripts longer than %d characters left out",
                    self.describe(),
                    n - len(out),
                    max_text_length,
                )
        return out

    # ---- items ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def load_item(self, i: int) -> dict[str, Any]:
        row = self.index[i]
        audio = torch.from_numpy(load_audio(row["path"], self.sample_rate))
        if self.wave_augs is not None:
            audio = self.wave_augs(audio)
        item = {"audio": audio, "text": row["text"], "duration": row["duration"], "audio_path": row["path"]}
        if self.text_encoder is not None:
            item["text_encoded"] = self.text_encoder.encode_tensor(row["text"])
        return item

    def __getitem__(self, i: int) -> dict[str, Any]:
        """A file that fails to decode is reported and, with ``replace_failed_files``, replaced by the
        next one (the item's ``load_failures`` lists the files it replaced; the trainer counts them);
        otherwise the item is ``{"load_error": (path, reason)}``."""
        failures = []
        for attempt in range(MAX_LOAD_RETRIES):
            j = (i + attempt) % len(self.index)
            try:
                item = self.load_item(j)
                item["load_failures"] = failures
                return item
            except AudioError as e:
                if not self.replace_failed_files:
                    logger.warning("%s: left out at load time: %s", self.describe(), e)
                    return {"load_error": (self.index[j]["path"], e.reason)}
                logger.warning("%s: skipped at load time: %s", self.describe(), e)
                failures.append(self.index[j]["path"])
        raise RuntimeError(
            f"{self.describe()}: {MAX_LOAD_RETRIES} consecutive files failed to load "
            f"starting at index {i}; check the data"
        )
