"""Each wave augmentation changes the signal as specified and keeps the [T] float32 contract."""

import math
import random

import numpy as np
import pytest
import soundfile as sf
import torch

from hw_asr.augmentations import (
    ColoredNoise,
    Gain,
    GaussianNoise,
    NoiseFromFiles,
    PitchShift,
    RandomApply,
    Reverb,
    Sequential,
    SpeedPerturb,
)
from hw_asr.augmentations.wave import colored_noise, pitch_shift, time_stretch
from hw_asr.builder import build_wave_augs

SR = 16000


def sine(freq, seconds=1.0, amp=0.5):
    t = torch.arange(int(SR * seconds), dtype=torch.float32) / SR
    return amp * torch.sin(2 * math.pi * freq * t)


def dominant_freq(x):
    spectrum = np.abs(np.fft.rfft(x.numpy() * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / SR)[spectrum.argmax()]


def snr_db(clean, noisy):
    noise = noisy - clean
    return 10 * math.log10(clean.pow(2).mean() / noise.pow(2).mean())


@pytest.fixture(autouse=True)
def seeded():
    random.seed(0)
    torch.manual_seed(0)


def check_contract(out, n=None):
    assert out.dtype == torch.float32 and out.dim() == 1
    if n is not None:
        assert out.numel() == n
    assert torch.isfinite(out).all()


def test_gain_scales_within_range():
    x = sine(300)
    out = Gain(min_gain_db=6.0, max_gain_db=6.0)(x)
    check_contract(out, x.numel())
    assert torch.allclose(out, x * 10 ** (6 / 20), atol=1e-6)


@pytest.mark.parametrize("cls", [GaussianNoise, ColoredNoise])
def test_noise_hits_requested_snr(cls):
    x = sine(300)
    out = cls(min_snr_db=12.0, max_snr_db=12.0)(x)
    check_contract(out, x.numel())
    assert abs(snr_db(x, out) - 12.0) < 0.1


def test_noise_colours_have_their_spectral_slope():
    def low_high_ratio(noise):
        power = np.abs(np.fft.rfft(noise.numpy())) ** 2
        freqs = np.fft.rfftfreq(noise.numel(), 1 / SR)
        return power[(freqs > 100) & (freqs < 400)].mean() / power[(freqs > 4000) & (freqs < 7000)].mean()

    g = torch.Generator().manual_seed(0)
    white, pink, brown, blue = (low_high_ratio(colored_noise(SR * 4, e, g)) for e in (0, 1, 2, -1))
    assert 0.7 < white < 1.4
    # pink falls 3 dB/octave: 100-400 Hz vs 4-7 kHz is a factor of about 20 in power; brown about 400
    assert 8 < pink < 50 and brown > 150 and blue < 0.1
    with pytest.raises(ValueError, match="unknown noise colour"):
        ColoredNoise(colors=["purple"])


def test_noise_from_files_adds_that_noise(tmp_path):
    noise = sine(1000, seconds=0.3).numpy()  # shorter than the utterance: looped
    sf.write(tmp_path / "hum.wav", noise, SR)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    aug = NoiseFromFiles(str(tmp_path), min_snr_db=0.0, max_snr_db=0.0, sample_rate=SR)
    x = sine(200)
    out = aug(x)
    check_contract(out, x.numel())
    assert abs(snr_db(x, out) - 0.0) < 0.1
    assert abs(dominant_freq(out - x) - 1000) < 5
    with pytest.raises(FileNotFoundError, match="nowhere"):
        NoiseFromFiles(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_changes_length_and_pitch(factor):
    x = sine(400)
    out = SpeedPerturb(factors=[factor], sample_rate=SR)(x)
    check_contract(out)
    assert abs(out.numel() - x.numel() / factor) <= 2
    assert abs(dominant_freq(out) - 400 * factor) < 5


def test_time_stretch_keeps_pitch_changes_length():
    x = sine(500)
    out = time_stretch(x, 1.25)
    assert out.numel() == round(x.numel() / 1.25)
    assert abs(dominant_freq(out) - 500) < 5


@pytest.mark.parametrize("semitones,expected", [(12.0, 880.0), (-12.0, 220.0), (3.0, 440 * 2**0.25)])
def test_pitch_shift_moves_frequency_keeps_length(semitones, expected):
    x = sine(440)
    out = pitch_shift(x, SR, semitones)
    check_contract(out, x.numel())
    assert abs(dominant_freq(out) - expected) < 6
    aug = PitchShift(min_semitones=semitones, max_semitones=semitones, sample_rate=SR)
    check_contract(aug(x), x.numel())


def test_reverb_adds_a_decaying_tail_and_keeps_level():
    x = torch.zeros(SR)
    x[:400] = sine(500, seconds=400 / SR)
    out = Reverb(min_rt60=0.5, max_rt60=0.5, min_drr_db=0.0, max_drr_db=0.0, sample_rate=SR)(x)
    check_contract(out, x.numel())
    assert abs(out.pow(2).mean().sqrt() - x.pow(2).mean().sqrt()) < 1e-4
    early, late = out[1000:3000].pow(2).mean(), out[5000:7000].pow(2).mean()
    assert early > 0 and late > 0 and late < early  # energy after the burst, decaying
    assert out[14000:].abs().max() < out[1000:3000].abs().max() * 0.1  # 60 dB down after RT60 (+ margin)


def test_probability_zero_is_identity_and_one_always_applies():
    x = sine(300)
    for aug in (Gain(p=0.0), ColoredNoise(p=0.0), SpeedPerturb(p=0.0, factors=[1.1]), PitchShift(p=0.0), Reverb(p=0.0)):
        assert aug(x) is x
    hits = sum(not torch.equal(RandomApply(Gain(min_gain_db=3, max_gain_db=3), p=0.3)(x), x) for _ in range(1000))
    assert 230 < hits < 370


def test_sequential_chains_outputs():
    x = sine(400)
    out = Sequential([SpeedPerturb(factors=[1.1], sample_rate=SR), Gain(min_gain_db=-6, max_gain_db=-6)])(x)
    assert abs(out.numel() - x.numel() / 1.1) <= 2
    assert abs(out.abs().max() - 0.5 * 10 ** (-6 / 20)) < 0.02


def test_builder_passes_the_sample_rate():
    config = {
        "sample_rate": 8000,
        "augmentations": {
            "wave": [
                {"type": "RandomApply", "args": {"p": 0.5, "augmentation": {"type": "SpeedPerturb", "args": {}}}},
                {"type": "Reverb", "args": {"p": 0.2}},
                {"type": "Gain", "args": {}},
            ]
        },
    }
    aug = build_wave_augs(config)
    assert aug.augmentations[0].augmentation.sample_rate == 8000
    assert aug.augmentations[1].sample_rate == 8000
