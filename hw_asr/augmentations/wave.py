"""Basic wave augmentations and combinators."""
import random

import torch


class Sequential:
    """Apply augmentations one after another, each on the previous output."""

    def __init__(self, augmentations):
        self.augmentations = list(augmentations)

    def __call__(self, audio):
        for aug in self.augmentations:
            audio = aug(audio)
        return audio


class RandomApply:
    """Apply ``augmentation`` with probability ``p``."""

    def __init__(self, augmentation, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.augmentation, self.p = augmentation, p

    def __call__(self, audio):
        return self.augmentation(audio) if random.random() < self.p else audio


class Gain:
    """Scale by a random gain in ``[min_gain_db, max_gain_db]`` decibels, with probability ``p``."""

    def __init__(self, min_gain_db=-6.0, max_gain_db=6.0, p=1.0):
        self.min_gain_db, self.max_gain_db, self.p = min_gain_db, max_gain_db, p

    def __call__(self, audio):
        if random.random() >= self.p:
            return audio
        gain_db = random.uniform(self.min_gain_db, self.max_gain_db)
        return audio * (10.0 ** (gain_db / 20.0))


class GaussianNoise:
    """Add white noise at a random SNR in ``[min_snr_db, max_snr_db]``, with probability ``p``."""

    def __init__(self, min_snr_db=10.0, max_snr_db=40.0, p=1.0):
        self.min_snr_db, self.max_snr_db, self.p = min_snr_db, max_snr_db, p

    def __call__(self, audio):
        if random.random() >= self.p:
            return audio
        snr_db = random.uniform(self.min_snr_db, self.max_snr_db)
        signal_power = audio.pow(2).mean().clamp_min(1e-10)
        noise_power = signal_power / (10.0 ** (snr_db / 10.0))
        return audio + torch.randn_like(audio) * noise_power.sqrt()
