"""Wave augmentations registry (train splits only, per item, on the CPU).

Each takes and returns a float32 tensor ``[T]``. Configs list them under
``augmentations.wave`` as ``{"type", "args"}`` blocks; they are chained in order.
"""
from hw_asr.augmentations.wave import Gain, GaussianNoise, RandomApply, Sequential

__all__ = ["Gain", "GaussianNoise", "RandomApply", "Sequential"]
