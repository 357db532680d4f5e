"""Feature extraction on the model's device: log-mel spectrogram with torch.stft."""

import math

import torch
from torch import Tensor, nn


def hz_to_mel(freq: float, scale: str = "htk") -> float:
    if scale == "htk":
        return 2595.0 * math.log10(1.0 + freq / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return freq / f_sp if freq < min_log_hz else min_log_mel + math.log(freq / min_log_hz) / logstep


def mel_to_hz(mels: Tensor, scale: str = "htk") -> Tensor:
    if scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(mels >= min_log_mel, min_log_hz * torch.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_filterbank(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int, scale: str = "htk", norm: str | None = None
) -> Tensor:
    """Triangular filters ``[n_freqs, n_mels]`` over the STFT bins (same maths as torchaudio's)."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2, dtype=torch.float64)
    f_pts = mel_to_hz(m_pts, scale)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
    elif norm is not None:
        raise ValueError(f"mel norm must be None or 'slaney', got {norm!r}")
    return fb.float()


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``[B, max_len]`` bool mask, True on real frames."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def normalize_and_mask(feats: Tensor, lengths: Tensor, normalize: str | None) -> tuple[Tensor, Tensor]:
    """Standardise each feature over an utterance's real frames (optional); zero padded frames."""
    mask = lengths_to_mask(lengths, feats.shape[-1]).unsqueeze(1)  # [B, 1, F]
    if normalize == "per_utterance":
        n = lengths.clamp_min(1).view(-1, 1, 1).to(feats.dtype)
        mean = (feats * mask).sum(-1, keepdim=True) / n
        var = ((feats - mean).pow(2) * mask).sum(-1, keepdim=True) / (n - 1).clamp_min(1)
        feats = (feats - mean) / (var.sqrt() + 1e-5)
    return feats.masked_fill(~mask, 0.0), lengths


WINDOWS = {"hamming": torch.hamming_window, "hann": torch.hann_window}


class STFTFrontend(nn.Module):
    """What the STFT frontends share: the window, the frame count, the float32 STFT (also under
    autocast) and the per-utterance normalisation with masking. A subclass turns the complex
    spectrum ``[B, n_fft // 2 + 1, F]`` into features (:meth:`features`) and says how many there are.

    Args:
        n_fft (int): FFT size. win_length (int): window length in samples. hop_length (int): hop in samples.
        window (str): ``"hann"`` or ``"hamming"``.
        normalize (str or None): ``"per_utterance"`` standardises each feature over the real frames of
            its utterance; None leaves them. Padded frames are 0 in the output either way.
        center (bool): frames centred on ``t * hop_length`` (the signal padded by ``n_fft // 2``).
        pad_mode (str): ``"constant"`` (zeros around each wave, like the batch padding: an utterance
            gets the same features alone and inside a padded batch) or ``"reflect"`` (torchaudio's default).
    """

    def __init__(
        self,
        n_fft: int,
        win_length: int,
        hop_length: int,
        window: str,
        normalize: str | None,
        center: bool,
        pad_mode: str,
    ) -> None:
        super().__init__()
        if normalize not in (None, "per_utterance"):
            raise ValueError(f"normalize must be None or 'per_utterance', got {normalize!r}")
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {sorted(WINDOWS)}, got {window!r}")
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.normalize, self.center, self.pad_mode = normalize, center, pad_mode
        self.register_buffer("window", WINDOWS[window](win_length), persistent=False)

    def output_lengths(self, audio_length: Tensor) -> Tensor:
        if self.center:
            return audio_length // self.hop_length + 1
        return (audio_length - self.n_fft) // self.hop_length + 1

    def features(self, spec: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, audio: Tensor, audio_length: Tensor) -> tuple[Tensor, Tensor]:
        """``audio [B, T]``, ``audio_length [B]`` -> ``(features [B, n_features, F] float32, frames [B])``."""
        with torch.autocast(device_type=audio.device.type, enabled=False):
            spec = torch.stft(
                audio.float(),
                self.n_fft,
                self.hop_length,
                self.win_length,
                self.window,
                center=self.center,
                pad_mode=self.pad_mode,
                return_complex=True,
            )
            return normalize_and_mask(self.features(spec), self.output_lengths(audio_length), self.normalize)


class LogMelFrontend(STFTFrontend):
    """Waves ``[B, T]`` -> log-mel features ``[B, n_mels, F]`` and frame counts ``[B]``: a Hann-windowed
    power spectrum through an ``n_mels`` mel filterbank (``mel_scale`` HTK or Slaney, ``mel_norm``), then
    ``log(mel + log_eps)``. The other arguments: :class:`STFTFrontend`."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 160,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "htk",
        mel_norm: str | None = None,
        log_eps: float = 2**-24,
        normalize: str | None = "per_utterance",
        center: bool = True,
        pad_mode: str = "constant",
    ) -> None:
        super().__init__(n_fft, win_length, hop_length, "hann", normalize, center, pad_mode)
        if mel_scale not in ("htk", "slaney"):
            raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
        self.n_mels, self.log_eps = n_mels, log_eps
        fb = mel_filterbank(n_fft // 2 + 1, f_min, f_max or sample_rate / 2, n_mels, sample_rate, mel_scale, mel_norm)
        self.register_buffer("filterbank", fb, persistent=False)

    @property
    def n_features(self) -> int:
        return self.n_mels

    def features(self, spec: Tensor) -> Tensor:
        power = spec.real.pow(2) + spec.imag.pow(2)  # [B, n_freqs, F]
        mel = torch.matmul(power.transpose(1, 2), self.filterbank).transpose(1, 2)
        return torch.log(mel + self.log_eps)


class SpectrogramFrontend(STFTFrontend):
    """Waves -> ``log(1 + |STFT|)`` over linear frequency, ``[B, n_fft // 2 + 1, F]``.

    The input of deepspeech.pytorch's DeepSpeech2 (20 ms Hamming window, 10 ms hop:
    161 bins at 16 kHz). The other arguments: :class:`STFTFrontend`.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 320,
        win_length: int = 320,
        hop_length: int = 160,
        window: str = "hamming",
        normalize: str | None = "per_utterance",
        center: bool = True,
        pad_mode: str = "constant",
    ) -> None:
        super().__init__(n_fft, win_length, hop_length, window, normalize, center, pad_mode)

    @property
    def n_features(self) -> int:
        return self.n_fft // 2 + 1

    def features(self, spec: Tensor) -> Tensor:
        return torch.log1p(spec.abs())
