"""Character vocabulary for CTC: blank + the alphabet."""

from collections.abc import Mapping, Sequence
from string import ascii_lowercase
from typing import Any

from hw_asr.text_encoder.base import BLANK_INDEX, BaseTextEncoder, normalize_text

ALPHABETS = {
    "en": " " + ascii_lowercase + "'",
    # 33 Russian letters incl. space, as Golos models use: ё folded into е.
    "ru": " " + "абвгдежзийклмнопрстуфхцчшщъыьэюя",
}
_FOLD = {"ru": str.maketrans({"ё": "е"})}


class CTCCharTextEncoder(BaseTextEncoder):
    """Characters as tokens; index 0 is the CTC blank.

    ``alphabet`` is a preset name (``"en"``: space, a-z, apostrophe; ``"ru"``)
    or an explicit string of characters. The space must be part of it.
    """

    def __init__(self, alphabet: str | Sequence[str] = "en") -> None:
        self.preset = alphabet if alphabet in ALPHABETS else None
        chars = ALPHABETS.get(alphabet, alphabet)
        if len(set(chars)) != len(chars):
            raise ValueError(f"alphabet has repeated characters: {chars!r}")
        if " " not in chars:
            raise ValueError("alphabet must contain the space character")
        self.alphabet = chars
        self.vocab = ["^"] + list(chars)  # "^" only names the blank in printouts
        self.char2ind = {c: i for i, c in enumerate(self.vocab) if i != BLANK_INDEX}
        self._fold = _FOLD.get(self.preset)

    def normalize(self, text: str) -> str:
        text = normalize_text(text, keep="'" if "'" in self.alphabet else "")
        return text.translate(self._fold) if self._fold else text

    def unknown_chars(self, text: str) -> set[str]:
        return {c for c in text if c not in self.char2ind}

    def encode(self, text: str) -> list[int]:
        try:
            return [self.char2ind[c] for c in text]
        except KeyError:
            bad = "".join(sorted(self.unknown_chars(text)))
            raise ValueError(f"characters {bad!r} are not in the alphabet, text: {text!r}") from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[i] for i in ids if i != BLANK_INDEX).strip()

    def state(self) -> dict[str, Any]:
        return {"type": "CTCCharTextEncoder", "alphabet": self.alphabet}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "CTCCharTextEncoder":
        alphabet = state["alphabet"]
        for name, chars in ALPHABETS.items():
            if chars == alphabet:
                alphabet = name
        return cls(alphabet)
