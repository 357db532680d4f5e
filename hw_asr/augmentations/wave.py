"""Wave augmentations and combinators: each takes and returns a float32 tensor ``[T]``."""

import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from hw_asr.audio import AudioError, find_audio_files, load_audio, resample
from hw_asr.manifests import read_manifest, report_skipped

logger = logging.getLogger(__name__)


class WaveAugmentation:
    """Applied with probability ``self.p`` (one ``random.random()`` draw per call); a subclass sets ``p``
    and implements ``apply(audio)``. ``skip_empty``: an empty waveform is returned as it is."""

    p = 1.0
    skip_empty = False

    def __call__(self, audio: Tensor) -> Tensor:
        if random.random() >= self.p or (self.skip_empty and audio.numel() == 0):
            return audio
        return self.apply(audio)

    def apply(self, audio: Tensor) -> Tensor:
        raise NotImplementedError


class Sequential:
    """Apply augmentations one after another, each on the previous output."""

    def __init__(self, augmentations: Iterable[Callable[[Tensor], Tensor]]) -> None:
        self.augmentations = list(augmentations)

    def __call__(self, audio: Tensor) -> Tensor:
        for aug in self.augmentations:
            audio = aug(audio)
        return audio


class RandomApply(WaveAugmentation):
    """Apply ``augmentation`` with probability ``p``."""

    def __init__(self, augmentation: Callable[[Tensor], Tensor], p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.augmentation, self.p = augmentation, p

    def apply(self, audio: Tensor) -> Tensor:
        return self.augmentation(audio)


class Gain(WaveAugmentation):
    """Scale by a random gain in ``[min_gain_db, max_gain_db]`` decibels, with probability ``p``."""

    def __init__(self, min_gain_db: float = -6.0, max_gain_db: float = 6.0, p: float = 1.0) -> None:
        self.min_gain_db, self.max_gain_db, self.p = min_gain_db, max_gain_db, p

    def apply(self, audio: Tensor) -> Tensor:
        gain_db = random.uniform(self.min_gain_db, self.max_gain_db)
        return audio * (10.0 ** (gain_db / 20.0))


def _mix_at_snr(audio: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    """``audio + noise`` scaled so that the signal-to-noise ratio is ``snr_db`` decibels."""
    signal_power = audio.pow(2).mean().clamp_min(1e-10)
    noise_power = noise.pow(2).mean().clamp_min(1e-10)
    scale = (signal_power / (noise_power * 10.0 ** (snr_db / 10.0))).sqrt()
    return audio + noise * scale


def colored_noise(n: int, exponent: float, generator: torch.Generator | None = None) -> Tensor:
    """``n`` samples of noise whose power spectrum falls as ``1 / f**exponent``
    (0 white, 1 pink, 2 brown, -1 blue, -2 violet), unit variance."""
    white = torch.randn(n, generator=generator)
    if exponent == 0 or n < 2:
        return white
    spectrum = torch.fft.rfft(white)
    freqs = torch.fft.rfftfreq(n)
    freqs[0] = freqs[1]  # keep DC finite
    noise = torch.fft.irfft(spectrum * freqs.pow(-exponent / 2.0), n=n)
    return noise / noise.std().clamp_min(1e-12)


NOISE_COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0, "violet": -2.0}


class ColoredNoise(WaveAugmentation):
    """Add white or coloured noise at a random SNR in ``[min_snr_db, max_snr_db]``, with
    probability ``p``. ``colors`` lists the noise colours drawn from (white, pink, brown,
    blue, violet) or spectral exponents (power ~ 1/f**exponent)."""

    def __init__(
        self,
        min_snr_db: float = 10.0,
        max_snr_db: float = 40.0,
        colors: Sequence[str | float] = ("white", "pink", "brown"),
        p: float = 1.0,
    ) -> None:
        self.exponents = []
        for c in colors:
            if isinstance(c, str) and c not in NOISE_COLORS:
                raise ValueError(f"unknown noise colour {c!r}; use one of {sorted(NOISE_COLORS)} or a number")
            self.exponents.append(NOISE_COLORS[c] if isinstance(c, str) else float(c))
        self.min_snr_db, self.max_snr_db, self.p = min_snr_db, max_snr_db, p

    def apply(self, audio: Tensor) -> Tensor:
        noise = colored_noise(audio.numel(), random.choice(self.exponents)).to(audio.dtype)
        return _mix_at_snr(audio, noise, random.uniform(self.min_snr_db, self.max_snr_db))


class GaussianNoise(ColoredNoise):
    """Add white noise at a random SNR in ``[min_snr_db, max_snr_db]``, with probability ``p``:
    ``ColoredNoise`` with ``colors=["white"]``, under the name the course templates use."""

    def __init__(self, min_snr_db: float = 10.0, max_snr_db: float = 40.0, p: float = 1.0) -> None:
        super().__init__(min_snr_db, max_snr_db, colors=("white",), p=p)


class NoiseFromFiles(WaveAugmentation):
    """Add a random stretch of recorded noise at a random SNR, with probability ``p``.

    ``noise`` is a path or a list of paths: audio files, folders (searched
    recursively for audio files) or JSON-lines manifests (rows whose audio is
    missing are reported and skipped). Files load
    lazily on first use (in each loader worker) and stay in memory; a noise file
    shorter than the utterance is looped. Unreadable files are skipped with a warning.
    """

    def __init__(
        self,
        noise: str | os.PathLike | Sequence[str | os.PathLike],
        min_snr_db: float = 5.0,
        max_snr_db: float = 30.0,
        p: float = 1.0,
        sample_rate: int = 16000,
    ) -> None:
        paths = []
        for item in [noise] if isinstance(noise, str) else list(noise):
            item = Path(item)
            if item.is_dir():
                paths += find_audio_files(item)
            elif item.suffix == ".jsonl" and item.is_file():
                rows, skipped = read_manifest(item)
                report_skipped(f"noise manifest {item}", skipped)
                paths += [Path(r["path"]) for r in rows]
            elif item.is_file():
                paths.append(item)
            else:
                raise FileNotFoundError(f"noise source not found: {item}")
        if not paths:
            raise ValueError(f"no noise audio found in {noise!r}")
        self.paths, self.sample_rate = paths, sample_rate
        self.min_snr_db, self.max_snr_db, self.p = min_snr_db, max_snr_db, p
        self._cache = None

    def _noises(self) -> list[Tensor]:
        if self._cache is None:
            self._cache = []
            for path in self.paths:
                try:
                    audio = torch.from_numpy(load_audio(path, self.sample_rate))
                except (AudioError, OSError) as e:
                    logger.warning("noise file skipped: %s (%s)", path, e)
                    continue
                if audio.numel() and audio.abs().max() > 0:
                    self._cache.append(audio)
            if not self._cache:
                raise RuntimeError(f"none of the {len(self.paths)} noise files could be read")
        return self._cache

    skip_empty = True

    def apply(self, audio: Tensor) -> Tensor:
        noise = random.choice(self._noises())
        n = audio.numel()
        if noise.numel() < n:
            noise = noise.repeat(n // noise.numel() + 1)
        start = random.randint(0, noise.numel() - n)
        return _mix_at_snr(
            audio, noise[start : start + n].to(audio.dtype), random.uniform(self.min_snr_db, self.max_snr_db)
        )


class SpeedPerturb(WaveAugmentation):
    """Speed perturbation (Ko et al., "Audio augmentation for speech recognition",
    Interspeech 2015): resample so the utterance plays ``factor`` times faster, with
    ``factor`` drawn from ``factors``; tempo and pitch change together and the
    length becomes ``round(T / factor)``. Applied with probability ``p``."""

    def __init__(self, factors: Sequence[float] = (0.9, 1.0, 1.1), p: float = 1.0, sample_rate: int = 16000) -> None:
        if not factors or any(f <= 0 for f in factors):
            raise ValueError(f"factors must be positive, got {factors}")
        self.factors, self.p, self.sample_rate = list(factors), p, sample_rate

    def apply(self, audio: Tensor) -> Tensor:
        factor = random.choice(self.factors)
        if factor == 1.0 or audio.numel() == 0:
            return audio
        return torch.from_numpy(resample(audio.numpy(), self.sample_rate, self.sample_rate / factor))


def time_stretch(audio: Tensor, rate: float, n_fft: int = 512, hop: int = 128) -> Tensor:
    """Phase-vocoder time stretch: ``rate`` > 1 plays faster (length ``T / rate``), pitch kept."""
    window = torch.hann_window(n_fft, dtype=audio.dtype)
    spec = torch.stft(audio, n_fft, hop, window=window, return_complex=True)  # [F, N]
    n_freq, n_frames = spec.shape
    steps = torch.arange(0, n_frames, rate, dtype=torch.float64)
    spec = torch.nn.functional.pad(spec, (0, 2))
    idx = steps.floor().long()
    frac = (steps - idx).to(audio.dtype)[None]
    left, right = spec[:, idx], spec[:, idx + 1]
    magnitude = (1 - frac) * left.abs() + frac * right.abs()
    expected = torch.linspace(0, math.pi * hop, n_freq, dtype=audio.dtype)[:, None]  # 2 pi k hop / n_fft
    delta = right.angle() - left.angle() - expected
    delta = delta - 2 * math.pi * torch.round(delta / (2 * math.pi))
    advance = expected + delta
    phase = spec[:, :1].angle() + torch.cat([torch.zeros_like(advance[:, :1]), advance[:, :-1].cumsum(1)], 1)
    out = torch.polar(magnitude, phase)
    return torch.istft(out, n_fft, hop, window=window, length=int(round(audio.numel() / rate)))


def pitch_shift(audio: Tensor, sample_rate: int, semitones: float, n_fft: int = 512, hop: int = 128) -> Tensor:
    """Shift pitch by ``semitones`` keeping the length: time-stretch by ``2**(-s/12)``,
    then resample back to ``T`` samples."""
    if semitones == 0 or audio.numel() < n_fft:
        return audio
    rate = 2.0 ** (-semitones / 12.0)
    out = torch.from_numpy(resample(time_stretch(audio, rate, n_fft, hop).numpy(), sample_rate / rate, sample_rate))
    n = audio.numel()
    return out[:n] if out.numel() >= n else torch.nn.functional.pad(out, (0, n - out.numel()))


class PitchShift(WaveAugmentation):
    """Shift pitch by a random number of semitones in ``[min_semitones, max_semitones]``
    (phase vocoder + resampling; length and tempo unchanged), with probability ``p``."""

    def __init__(
        self, min_semitones: float = -2.0, max_semitones: float = 2.0, p: float = 1.0, sample_rate: int = 16000
    ) -> None:
        self.min_semitones, self.max_semitones, self.p, self.sample_rate = min_semitones, max_semitones, p, sample_rate

    def apply(self, audio: Tensor) -> Tensor:
        return pitch_shift(audio, self.sample_rate, random.uniform(self.min_semitones, self.max_semitones))


def synthetic_rir(
    rt60: float, sample_rate: int, direct_ratio_db: float = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    """A synthetic room impulse response: a unit direct path, then Gaussian noise decaying by
    60 dB over ``rt60`` seconds, its energy ``direct_ratio_db`` below the direct path."""
    n = max(2, int(rt60 * sample_rate))
    t = torch.arange(n, dtype=torch.float32) / sample_rate
    tail = torch.randn(n, generator=generator) * torch.exp(-6.907755 * t / rt60)  # ln(1000) = 60 dB amplitude
    tail[0] = 0.0
    tail = tail / tail.pow(2).sum().sqrt().clamp_min(1e-12) * 10.0 ** (-direct_ratio_db / 20.0)
    tail[0] = 1.0
    return tail


class Reverb(WaveAugmentation):
    """Synthetic reverberation: convolve with :func:`synthetic_rir` of a random RT60 in
    ``[min_rt60, max_rt60]`` seconds and direct-to-reverberant ratio in
    ``[min_drr_db, max_drr_db]``; length and RMS level unchanged. Probability ``p``."""

    def __init__(
        self,
        min_rt60: float = 0.2,
        max_rt60: float = 0.8,
        min_drr_db: float = -3.0,
        max_drr_db: float = 10.0,
        p: float = 1.0,
        sample_rate: int = 16000,
    ) -> None:
        if not 0 < min_rt60 <= max_rt60:
            raise ValueError(f"need 0 < min_rt60 <= max_rt60, got {min_rt60}, {max_rt60}")
        self.min_rt60, self.max_rt60, self.p, self.sample_rate = min_rt60, max_rt60, p, sample_rate
        self.min_drr_db, self.max_drr_db = min_drr_db, max_drr_db

    skip_empty = True

    def apply(self, audio: Tensor) -> Tensor:
        rir = synthetic_rir(
            random.uniform(self.min_rt60, self.max_rt60),
            self.sample_rate,
            random.uniform(self.min_drr_db, self.max_drr_db),
        ).to(audio.dtype)
        n = audio.numel() + rir.numel() - 1
        wet = torch.fft.irfft(torch.fft.rfft(audio, n) * torch.fft.rfft(rir, n), n)[: audio.numel()]
        rms_in, rms_out = audio.pow(2).mean().sqrt(), wet.pow(2).mean().sqrt().clamp_min(1e-12)
        return (wet * (rms_in / rms_out)).to(audio.dtype)
