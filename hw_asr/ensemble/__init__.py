"""Confidence-based ensembles of trained checkpoints (build, route, migrate)."""

from hw_asr.ensemble.confidence import (
    confidence_features,
    confidence_settings,
    frame_confidence,
    migrate_confidence,
    utterance_confidence,
)
from hw_asr.ensemble.ensemble import ConfidenceEnsemble, Member, Selector, fit_selector

__all__ = [
    "ConfidenceEnsemble",
    "Member",
    "Selector",
    "confidence_features",
    "confidence_settings",
    "fit_selector",
    "frame_confidence",
    "migrate_confidence",
    "utterance_confidence",
]
