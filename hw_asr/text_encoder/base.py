"""What every CTC text encoder shares: normalisation, blank, greedy collapse."""

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import torch

BLANK_INDEX = 0  # the CTC blank is token 0 in every vocabulary of this project

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u02bc": "'"})
_SPACE_LIKE = re.compile(r"[\s\-\u2010-\u2015_/]+")


def normalize_text(text: str, keep: str = "'") -> str:
    """Lower-case, unify apostrophes, drop punctuation, squeeze spaces.

    Characters in ``keep`` survive even though Unicode calls them punctuation.
    Digits and letters of other scripts are kept, so that an encoder can
    report them as outside its alphabet instead of silently deleting words.
    """
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    text = _SPACE_LIKE.sub(" ", text)
    text = "".join(ch for ch in text if ch in keep or not unicodedata.category(ch).startswith(("P", "S", "C")))
    return " ".join(text.split())


class BaseTextEncoder:
    """Interface: ``encode``, ``decode``, ``ctc_greedy``, ``normalize``, ``state``."""

    vocab: list

    def __len__(self) -> int:
        return len(self.vocab)

    def normalize(self, text: str) -> str:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def unknown_chars(self, text: str) -> set[str]:
        """Characters of a normalised text the encoder cannot represent."""
        return set()

    def ctc_collapse(self, ids: Iterable[int]) -> list[int]:
        """Merge repeats, then drop blanks: the CTC many-to-one map."""
        out, prev = [], None
        for i in ids:
            if i != prev and i != BLANK_INDEX:
                out.append(i)
            prev = i
        return out

    def ctc_greedy(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Argmax decoding of a batch ``[B, T, V]`` into strings."""
        best = log_probs.argmax(-1).cpu()
        lengths = lengths.cpu().tolist()
        return [self.decode(self.ctc_collapse(best[b, : lengths[b]].tolist())) for b in range(len(lengths))]

    def encode_tensor(self, text: str) -> torch.Tensor:
        return torch.tensor(self.encode(text), dtype=torch.long)

    def state(self) -> dict[str, Any]:
        raise NotImplementedError
