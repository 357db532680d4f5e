"""Audio input: soundfile reads, mono downmix, soxr resampling."""
import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")


class AudioError(RuntimeError):
    """An audio file that cannot be used; the message names the file."""


def audio_duration(path):
    """Duration in seconds from the file header (no decoding)."""
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for bad files
        raise AudioError(f"{path}: cannot read audio header: {e}") from None
    if info.samplerate <= 0:
        raise AudioError(f"{path}: invalid sample rate {info.samplerate}")
    return info.frames / info.samplerate


def load_audio(path, sample_rate=16000):
    """Read a file as float32 mono at ``sample_rate``.

    Raises AudioError naming the file for unreadable, empty or non-finite audio.
    """
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{path}: cannot decode audio: {e}") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    audio = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(audio, dtype=np.float32)
