"""Sub-word vocabulary (BPE or unigram) from sentencepiece; index 0 is the CTC blank."""

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from hw_asr.text_encoder.base import BLANK_INDEX, BaseTextEncoder, normalize_text


class SentencePieceTextEncoder(BaseTextEncoder):
    """Wraps a trained sentencepiece model; token ``i`` is piece ``i - 1``.

    Train a model from a split's transcripts with
    ``python -m hw_asr.tools.train_sentencepiece`` (see README).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, model_proto: bytes | None = None) -> None:
        if (model_path is None) == (model_proto is None):
            raise ValueError("give exactly one of model_path or model_proto")
        if model_path is not None:
            path = Path(model_path)
            if not path.is_file():
                raise FileNotFoundError(
                    f"sentencepiece model {path} not found; train one with python -m hw_asr.tools.train_sentencepiece"
                )
            model_proto = path.read_bytes()
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self.vocab = ["^"] + [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        self._unk = self.sp.unk_id()

    @staticmethod
    def train(
        texts: Iterable[str],
        model_prefix: str | os.PathLike,
        vocab_size: int = 256,
        model_type: str = "bpe",
        character_coverage: float = 1.0,
    ) -> Path:
        """Train on normalised ``texts``; writes ``<model_prefix>.model`` and returns its path."""
        texts = [normalize_text(t) for t in texts if t.strip()]
        if not texts:
            raise ValueError("no transcripts to train sentencepiece on")
        Path(model_prefix).parent.mkdir(parents=True, exist_ok=True)
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_prefix=str(model_prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            bos_id=-1,
            eos_id=-1,
            unk_id=0,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        return Path(f"{model_prefix}.model")

    def normalize(self, text: str) -> str:
        return normalize_text(text)

    def unknown_chars(self, text: str) -> set[str]:
        return {c for c in set(text) - {" "} if self.sp.piece_to_id(c) == self._unk and self._unk in self.sp.encode(c)}

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([i - 1 for i in ids if i != BLANK_INDEX]).strip()

    def state(self) -> dict[str, Any]:
        return {"type": "SentencePieceTextEncoder", "model_proto": self.model_proto}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "SentencePieceTextEncoder":
        return cls(model_proto=state["model_proto"])
