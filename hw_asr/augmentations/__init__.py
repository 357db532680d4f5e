"""Wave augmentations registry (train splits only, per item, on the CPU).

Each takes and returns a float32 tensor ``[T]``. Configs list them under
``augmentations.wave`` as ``{"type", "args"}`` blocks; they are chained in order.
Those that need the sample rate (speed, pitch, reverb, noise files) get the
config's ``sample_rate`` from the framework.
"""

from hw_asr.augmentations.wave import (
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

__all__ = [
    "ColoredNoise",
    "Gain",
    "GaussianNoise",
    "NoiseFromFiles",
    "PitchShift",
    "RandomApply",
    "Reverb",
    "Sequential",
    "SpeedPerturb",
]
