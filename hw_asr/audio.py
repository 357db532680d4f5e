"""Audio input: soundfile reads, mono downmix, soxr resampling."""

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")


def resample(audio: np.ndarray, in_rate: float, out_rate: float) -> np.ndarray:
    """``audio`` (numpy, 1-D) from ``in_rate`` to ``out_rate`` Hz with soxr, as contiguous float32."""
    out = audio if in_rate == out_rate else soxr.resample(audio, in_rate, out_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def find_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Audio files under ``folder`` (recursively), sorted."""
    return sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS)


class AudioError(RuntimeError):
    """An audio file that cannot be used; the message names the file: ``"<path>: <reason>"``."""

    @property
    def reason(self) -> str:
        """The message without the file's name."""
        return str(self).split(": ", 1)[-1]


class UndecodableAudio(AudioError):
    """The file is not audio that soundfile can decode (as opposed to decodable but empty or non-finite)."""


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the file header (no decoding)."""
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for bad files
        raise AudioError(f"{path}: cannot read audio header: {e}") from None
    if info.samplerate <= 0:
        raise AudioError(f"{path}: invalid sample rate {info.samplerate}")
    return info.frames / info.samplerate


def decode_audio(source: str | os.PathLike | BinaryIO, name: str | None = None) -> tuple[np.ndarray, int]:
    """``(float32 mono samples, sample rate)`` of a path or a file object, at the file's own rate.

    Raises :class:`UndecodableAudio` for what is not decodable audio and AudioError for empty or
    non-finite audio, the message naming ``name`` (default: the path).
    """
    name = source if name is None else name
    try:
        data, sr = sf.read(source if hasattr(source, "read") else str(source), dtype="float32", always_2d=True)
    except Exception as e:
        raise UndecodableAudio(f"{name}: cannot decode audio: {e}") from None
    if data.shape[0] == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    audio = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(audio).all():
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    return audio, sr


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Read a file as float32 mono at ``sample_rate``.

    Raises AudioError naming the file for unreadable, empty or non-finite audio.
    """
    audio, sr = decode_audio(path)
    return resample(audio, sr, sample_rate)
