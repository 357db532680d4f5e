"""Word n-gram language models for the decoders: KenLM (ARPA or binary) scores and the vocabulary of an LM."""

import math
import os
from functools import lru_cache

LN10 = math.log(10.0)


class KenLMWordLM:
    """Word n-gram LM (ARPA or KenLM binary) as natural-log probabilities of word sequences."""

    def __init__(self, path: str | os.PathLike) -> None:
        import kenlm

        self.path = str(path)
        self.model = kenlm.Model(self.path)
        self.score = lru_cache(maxsize=200_000)(self._score)

    def _score(self, words: tuple[str, ...], final: bool = False) -> float:
        """ln P(words) from the sentence start; ``final`` adds the end of sentence."""
        return self.model.score(" ".join(words), bos=True, eos=final) * LN10


def read_words(path: str | os.PathLike) -> list[str]:
    """Non-empty lines of a word list, stripped."""
    with open(path, encoding="utf-8") as f:
        return [w.strip() for w in f if w.strip()]


def lm_vocabulary(lm_path: str | os.PathLike, required: bool = True) -> list[str] | None:
    """The words of a KenLM model: ``<lm>.unigrams.txt`` beside it (written by
    ``build_lm``), else the ARPA's 1-grams. Without either: an error, or None when not
    ``required``."""
    path = str(lm_path)
    unigrams = path.rsplit(".", 1)[0] + ".unigrams.txt"
    if os.path.isfile(unigrams):
        return read_words(unigrams)
    if path.endswith(".arpa"):
        words, in_unigrams = [], False
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("\\1-grams:"):
                    in_unigrams = True
                elif line.startswith("\\2-grams:") or line.startswith("\\end\\"):
                    break
                elif in_unigrams and line.strip():
                    words.append(line.split("\t")[1].strip())
        return [w for w in words if w not in ("<s>", "</s>", "<unk>")]
    if not required:
        return None
    raise ValueError(f"the LM's words are needed: give them explicitly or put {unigrams} beside {path}")
