"""Datasets registry: ``{"type": "LibrispeechDataset", "args": {"part": "dev-clean"}}``."""

from hw_asr.datasets.custom_dir_dataset import CustomDirAudioDataset
from hw_asr.datasets.golos_dataset import GolosDataset
from hw_asr.datasets.librispeech_dataset import LibrispeechDataset
from hw_asr.datasets.ljspeech_dataset import LJSpeechDataset
from hw_asr.datasets.manifest_dataset import ManifestDataset
from hw_asr.datasets.shar_dataset import SharDataset

__all__ = [
    "ManifestDataset",
    "LibrispeechDataset",
    "LJSpeechDataset",
    "GolosDataset",
    "CustomDirAudioDataset",
    "SharDataset",
]
