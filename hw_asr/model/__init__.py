"""Models registry: ``{"type": "DeepSpeech2", "args": {...}}``."""
from hw_asr.model.baseline_model import BaselineModel
from hw_asr.model.deepspeech2 import DeepSpeech2
from hw_asr.model.frontend import LogMelFrontend
from hw_asr.model.spec_augment import SpecAugment

__all__ = ["BaselineModel", "DeepSpeech2"]
