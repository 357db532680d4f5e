"""Models registry: ``{"type": "DeepSpeech2", "args": {...}}``."""

from hw_asr.model.baseline_model import BaselineModel
from hw_asr.model.conformer import Conformer, FastConformer
from hw_asr.model.deepspeech2 import DeepSpeech2
from hw_asr.model.ebranchformer import EBranchformer
from hw_asr.model.frontend import LogMelFrontend, SpectrogramFrontend
from hw_asr.model.quartznet import QuartzNet
from hw_asr.model.spec_augment import SpecAugment

__all__ = ["BaselineModel", "DeepSpeech2", "QuartzNet", "Conformer", "FastConformer", "EBranchformer"]
