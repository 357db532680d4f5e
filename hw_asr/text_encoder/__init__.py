"""Text encoders registry: ``{"type": "CTCCharTextEncoder", "args": {...}}``."""

from collections.abc import Mapping
from typing import Any

from hw_asr.text_encoder.base import BLANK_INDEX, BaseTextEncoder, normalize_text
from hw_asr.text_encoder.ctc_char_text_encoder import CTCCharTextEncoder
from hw_asr.text_encoder.sentencepiece_text_encoder import SentencePieceTextEncoder

__all__ = ["CTCCharTextEncoder", "SentencePieceTextEncoder"]


def text_encoder_from_state(state: Mapping[str, Any]) -> BaseTextEncoder:
    """Rebuild an encoder from the dict a checkpoint stores (see ``BaseTextEncoder.state``)."""
    kinds = {"CTCCharTextEncoder": CTCCharTextEncoder, "SentencePieceTextEncoder": SentencePieceTextEncoder}
    if state.get("type") not in kinds:
        raise ValueError(f"unknown text encoder in checkpoint: {state.get('type')!r}")
    return kinds[state["type"]].from_state(state)
