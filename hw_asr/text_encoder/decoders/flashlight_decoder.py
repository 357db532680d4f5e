"""flashlight-text's lexicon and lexicon-free beam decoders behind our decoder interface."""

import os

import numpy as np

from hw_asr.text_encoder.base import BLANK_INDEX, BaseTextEncoder
from hw_asr.text_encoder.decoders.common import NBestDecoder, _word_boundaries
from hw_asr.text_encoder.decoders.language_model import lm_vocabulary


class FlashlightDecoder(NBestDecoder):
    """flashlight-text's compiled beam search.

    With ``lm_path`` (a KenLM word model) it uses the lexicon decoder: words are
    spelled with the encoder's tokens (the LM's vocabulary, or ``lexicon_words``),
    so only known words come out. Without an LM it runs lexicon-free. Character
    vocabularies use the space as word separator; sentencepiece vocabularies ``▁``.
    """

    def __init__(
        self,
        text_encoder: BaseTextEncoder,
        beam_size: int = 50,
        lm_path: str | os.PathLike | None = None,
        lexicon_words: str | os.PathLike | None = None,
        alpha: float = 0.5,
        beta: float = 1.0,
        token_top_k: int = 20,
        beam_threshold: float = 25.0,
        unk_score: float = float("-inf"),
        sil_score: float = 0.0,
    ) -> None:
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            LexiconFreeDecoder,
            LexiconFreeDecoderOptions,
            SmearingMode,
            Trie,
            ZeroLM,
        )
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary, create_word_dict

        self.encoder = text_encoder
        vocab = list(text_encoder.vocab)
        _, bpe = _word_boundaries(text_encoder)
        self.separator = " " if not bpe else "\u2581"
        tokens = Dictionary()
        for piece in vocab:
            tokens.add_entry(piece if piece != " " else "|")
        self.sil = tokens.get_index("|") if not bpe else -1
        self.blank = BLANK_INDEX
        if lm_path:
            words = lexicon_words or lm_vocabulary(lm_path)
            lexicon = {w: [self._spell(w)] for w in words if self._spell(w) is not None}
            spelled = {w: [[tokens.get_entry(i) for i in sp] for sp in spellings] for w, spellings in lexicon.items()}
            self.word_dict = create_word_dict({**spelled, "<unk>": [[]]})  # it sets <unk> as the default word
            lm = KenLM(str(lm_path), self.word_dict)
            trie = Trie(len(vocab), self.sil)
            start = lm.start(False)
            for word, spellings in lexicon.items():
                idx = self.word_dict.get_index(word)
                _, score = lm.score(start, idx)
                for spelling in spellings:
                    trie.insert(spelling, idx, score)
            trie.smear(SmearingMode.MAX)
            opts = LexiconDecoderOptions(
                beam_size=beam_size,
                beam_size_token=token_top_k,
                beam_threshold=beam_threshold,
                lm_weight=alpha,
                word_score=beta,
                unk_score=unk_score,
                sil_score=sil_score,
                log_add=False,
                criterion_type=CriterionType.CTC,
            )
            self.decoder = LexiconDecoder(
                opts, trie, lm, self.sil, self.blank, self.word_dict.get_index("<unk>"), [], False
            )
            self.lexicon = True
        else:
            opts = LexiconFreeDecoderOptions(
                beam_size=beam_size,
                beam_size_token=token_top_k,
                beam_threshold=beam_threshold,
                lm_weight=0.0,
                sil_score=sil_score,
                log_add=False,
                criterion_type=CriterionType.CTC,
            )
            self.decoder = LexiconFreeDecoder(opts, ZeroLM(), self.sil, self.blank, [])
            self.lexicon = False

    def _spell(self, word: str) -> list[int] | None:
        if self.separator == " ":
            ids = []
            for ch in word:
                if ch not in self.encoder.char2ind:
                    return None
                ids.append(self.encoder.char2ind[ch])
            return ids + [self.sil]
        ids = self.encoder.encode(word)
        return ids if ids else None

    def __call__(self, log_probs: np.ndarray, length: int | None = None) -> list[tuple[str, float]]:
        import torch

        lp = torch.as_tensor(
            np.ascontiguousarray(
                np.asarray(log_probs, dtype=np.float32)[: length if length is not None else len(log_probs)]
            )
        )
        results = self.decoder.decode(lp.data_ptr(), lp.shape[0], lp.shape[1])
        out = []
        for r in results:
            if self.lexicon:
                text = " ".join(self.word_dict.get_entry(w) for w in r.words if w >= 0)
            else:
                ids = [i for i in r.tokens if 0 <= i < len(self.encoder.vocab)]  # -1 pads the ends
                text = self.encoder.decode(self.encoder.ctc_collapse(ids))
            out.append((" ".join(text.split()), float(r.score)))
        return out
