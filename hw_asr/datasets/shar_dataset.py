"""Sharded datasets in the Lhotse Shar format, read as a stream.

A Shar folder holds numbered shards: ``cuts.000000.jsonl.gz`` (one line per utterance: id, duration,
transcript) beside ``recording.000000.tar`` (the encoded audio, in the same order), and so on. Reading
one shard is two sequential reads, however many utterances it holds, which is what network storage and
millions of utterances need. ``python -m hw_asr.tools.export_shar`` writes such a folder from any dataset
this framework reads, with ``shar_index.json``: the shards with their utterance count and seconds. A
dataset starts from that index alone (work in the number of shards, not of utterances); the utterances
are read when an epoch streams through the shards.

Lhotse reads the format (``LazySharIterator``); the framework decodes the audio bytes itself
(``audio.decode_audio``: soundfile, soxr) so that a bad utterance is reported exactly as a bad loose file.
Which shards a process and a data-loader worker read, and how utterances form batches, is the
``StreamBucketSampler``'s job (``hw_asr/batch_sampler/stream.py``).
"""

import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset

from hw_asr.audio import AudioError, decode_audio, resample
from hw_asr.text_encoder.base import BaseTextEncoder, normalize_text

logger = logging.getLogger(__name__)

INDEX_NAME = "shar_index.json"
INDEX_FORMAT = "hw_asr-shar-index"


class ShardError(RuntimeError):
    """A shard that cannot be read (missing, truncated, not a Shar shard); the message names it."""


@dataclass(frozen=True)
class Shard:
    cuts: Path  # cuts.NNNNNN.jsonl.gz
    recording: Path  # recording.NNNNNN.tar
    utterances: int
    seconds: float
    max_seconds: float

    @property
    def name(self) -> str:
        return str(self.recording)


@dataclass
class Entry:
    """One utterance of a shard before its audio is decoded: the encoded bytes stay small in a buffer."""

    id: str
    text: str
    duration: float
    data: bytes
    where: str  # "<recording tar>:<utterance id>", how messages name it


def read_index(folder: str | os.PathLike) -> tuple[list[Shard], dict[str, Any]]:
    """The shards listed in ``<folder>/shar_index.json``; every shard's two files must exist."""
    folder = Path(folder)
    path = folder / INDEX_NAME
    if not folder.is_dir():
        raise FileNotFoundError(f"Shar folder not found: {folder}")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a Shar folder needs the index that python -m hw_asr.tools.export_shar writes "
            f"last (a folder without it is an export that did not finish; a Shar folder written by Lhotse "
            f"itself gets one with: python -m hw_asr.tools.export_shar --index-only {folder})"
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") != INDEX_FORMAT:
            raise ValueError(f"format is {index.get('format')!r}, not {INDEX_FORMAT!r}")
        shards = [
            Shard(
                folder / s["cuts"],
                folder / s["recording"],
                int(s["utterances"]),
                float(s["seconds"]),
                float(s["max_seconds"]),
            )
            for s in index["shards"]
        ]
    except (ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{path}: not a Shar index: {e}") from None
    for s in shards:
        for f in (s.cuts, s.recording):
            if not f.is_file():
                raise FileNotFoundError(
                    f"{path} lists shard {f.name}, which is missing: copy the whole folder again or export it again"
                )
    return shards, index


class SharDataset(IterableDataset):
    """Utterances from one or several Shar folders (``shar_dir``: a path or a list), streamed.

    For the train split, batched by ``StreamBucketSampler``. Filters: ``max_audio_length`` (seconds),
    ``max_text_length`` (characters), applied while streaming. The index is all that is read at start-up.
    """

    streaming = True  # the builder pairs it with a stream sampler and a loader without a batch sampler
    # what a file that fails to decode becomes (set by the builder for the train split): skipped, with a
    # warning, and counted in the next item's ``load_failures``; otherwise ``{"load_error": ...}``
    replace_failed_files = False

    def __init__(
        self,
        shar_dir: str | os.PathLike | Sequence[str | os.PathLike],
        text_encoder: BaseTextEncoder | None = None,
        sample_rate: int = 16000,
        max_audio_length: float | None = None,
        max_text_length: int | None = None,
        wave_augs: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.folders = [Path(p) for p in (shar_dir if isinstance(shar_dir, (list, tuple)) else [shar_dir])]
        if not self.folders:
            raise ValueError("shar_dir names no folder")
        self.text_encoder = text_encoder
        self.sample_rate = sample_rate
        self.max_audio_length, self.max_text_length = max_audio_length, max_text_length
        self.wave_augs = wave_augs
        self.name = type(self).__name__
        self.shards = [s for folder in self.folders for s in read_index(folder)[0]]
        if not self.shards:
            raise ValueError(f"{self.describe()}: the index lists no shard")
        logger.info(
            "%s: %d shards, %d utterances, %.1f h",
            self.describe(),
            len(self.shards),
            self.utterances,
            self.seconds / 3600,
        )

    def describe(self) -> str:
        return f"{self.name}({', '.join(map(str, self.folders))})"

    @property
    def utterances(self) -> int:
        return sum(s.utterances for s in self.shards)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.shards)

    def __len__(self) -> int:
        return self.utterances

    def __iter__(self) -> Iterator[dict]:
        raise TypeError(f"{self.describe()} is read through a StreamBucketSampler (data.<split>.batch_sampler)")

    # ---- streaming --------------------------------------------------------------------
    def _usable(self, cut: Any, where: str, skipped: list[tuple[str, str]]) -> str | None:
        """The entry's text, or None (with the reason in ``skipped``) when filters or checks leave it out."""
        text = cut.supervisions[0].text if cut.supervisions else None
        if not isinstance(text, str):
            skipped.append((where, "no transcript"))
            return None
        normalize = normalize_text if self.text_encoder is None else self.text_encoder.normalize
        text = normalize(text)
        if not text:
            skipped.append((where, "empty transcript"))
            return None
        if self.text_encoder is not None:
            unknown = self.text_encoder.unknown_chars(text)
            if unknown:
                skipped.append(
                    (where, f"characters {''.join(sorted(unknown))!r} are not in the text encoder's vocabulary")
                )
                return None
        if self.max_audio_length is not None and cut.duration > self.max_audio_length:
            return None
        if self.max_text_length is not None and len(text) > self.max_text_length:
            return None
        return text

    def entries(self, shard: Shard, skipped: list[tuple[str, str]]) -> Iterator[Entry]:
        """The usable entries of one shard, in order. Utterances left out by a check (not by a filter) are
        appended to ``skipped`` as ``(where, reason)``. A shard that cannot be read to its end raises
        :class:`ShardError` naming it, after the entries read before the fault."""
        from lhotse.shar.readers.lazy import LazySharIterator

        reader = LazySharIterator(fields={"cuts": [str(shard.cuts)], "recording": [str(shard.recording)]})
        iterator = iter(reader)
        while True:
            try:
                cut = next(iterator)
            except StopIteration:
                return
            except Exception as e:  # tarfile, gzip, JSON and Lhotse's own consistency errors
                raise ShardError(f"{shard.name}: truncated or corrupt shard ({type(e).__name__}: {e})") from None
            where = f"{shard.recording}:{cut.id}"
            text = self._usable(cut, where, skipped)
            if text is None:
                continue
            source = cut.recording.sources[0] if cut.has_recording and cut.recording.sources else None
            if source is None or source.type != "memory":
                skipped.append((where, "the shard holds no audio for this utterance"))
                continue
            yield Entry(cut.id, text, float(cut.duration), source.source, where)

    def transcripts(self) -> Iterator[dict[str, Any]]:
        """``{"text", "duration"}`` of every usable utterance, from the shards' cut lists alone (no audio is
        read): what a statistic of the training split's transcripts, such as ``trainer.head_prior``, needs."""
        from lhotse.shar.readers.lazy import LazySharIterator

        skipped: list[tuple[str, str]] = []
        for shard in self.shards:
            try:
                for cut in LazySharIterator(fields={"cuts": [str(shard.cuts)]}):
                    text = self._usable(cut, f"{shard.cuts}:{cut.id}", skipped)
                    if text is not None:
                        yield {"text": text, "duration": float(cut.duration)}
            except Exception as e:  # gzip, JSON and Lhotse's own consistency errors
                raise ShardError(f"{shard.cuts}: truncated or corrupt cut list ({type(e).__name__}: {e})") from None

    def load_entry(self, entry: Entry) -> dict[str, Any]:
        """The dataset item (docs/architecture.md) of an entry; raises AudioError naming it."""
        audio, sr = decode_audio(io.BytesIO(entry.data), name=entry.where)
        audio = torch.from_numpy(resample(audio, sr, self.sample_rate))
        if self.wave_augs is not None:
            audio = self.wave_augs(audio)
        item = {"audio": audio, "text": entry.text, "duration": entry.duration, "audio_path": entry.where}
        if self.text_encoder is not None:
            item["text_encoded"] = self.text_encoder.encode_tensor(entry.text)
        return item

    def load_entries(self, entries: Iterable[Entry], failures: list[str]) -> list[dict[str, Any]]:
        """Items of a batch's entries. A file that fails to decode is left out with a warning (training:
        its name goes to ``failures``, which the next item carries as ``load_failures``) or becomes
        ``{"load_error": (where, reason)}`` outside training, as loose files do."""
        items = []
        for entry in entries:
            try:
                item = self.load_entry(entry)
            except AudioError as e:
                logger.warning("%s: skipped at load time: %s", self.describe(), e)
                if not self.replace_failed_files:
                    items.append({"load_error": (entry.where, e.reason)})
                else:
                    failures.append(entry.where)
                continue
            item["load_failures"], failures[:] = list(failures), []
            items.append(item)
        return items
