"""pyctcdecode's beam search (with a KenLM LM and hot words) behind our decoder interface."""

import os
from collections.abc import Sequence

import numpy as np
import torch

from hw_asr.text_encoder.base import BLANK_INDEX, BaseTextEncoder
from hw_asr.text_encoder.decoders.language_model import lm_vocabulary, read_words


class PyCTCDecodeDecoder:
    """pyctcdecode's beam search, with a KenLM word model (``lm_path``: ARPA or binary) or none.

    ``unigrams_path`` (one word per line; default ``<lm>.unigrams.txt`` beside the LM, or
    the ARPA's 1-grams) lets it favour known words; word or BPE
    vocabularies are detected from the encoder. ``num_processes`` > 1 decodes a
    batch with a process pool. ``hotwords`` (words or phrases) are boosted by ``hotword_weight``
    through pyctcdecode's own hot-word scorer.
    """

    def __init__(
        self,
        text_encoder: BaseTextEncoder,
        beam_size: int = 50,
        lm_path: str | os.PathLike | None = None,
        unigrams_path: str | os.PathLike | None = None,
        alpha: float = 0.5,
        beta: float = 1.0,
        num_processes: int = 1,
        token_min_logp: float = -12.0,
        hotwords: Sequence[str] | None = None,
        hotword_weight: float = 10.0,
    ) -> None:
        from pyctcdecode import build_ctcdecoder

        self.encoder = text_encoder
        labels = ["" if i == BLANK_INDEX else piece for i, piece in enumerate(text_encoder.vocab)]
        unigrams = None
        if unigrams_path:
            unigrams = read_words(unigrams_path)
        elif lm_path:
            unigrams = lm_vocabulary(lm_path, required=False)
        self.decoder = build_ctcdecoder(labels, kenlm_model_path=lm_path, unigrams=unigrams, alpha=alpha, beta=beta)
        self.num_processes = num_processes
        hot = [text_encoder.normalize(h) for h in hotwords or [] if text_encoder.normalize(h)]
        self.options = {"beam_width": beam_size, "token_min_logp": token_min_logp}
        if hot:
            self.options.update(hotwords=hot, hotword_weight=hotword_weight)

    def __call__(self, log_probs: np.ndarray, length: int | None = None) -> list[tuple[str, float]]:
        lp = np.asarray(log_probs, dtype=np.float32)[: length if length is not None else len(log_probs)]
        beams = self.decoder.decode_beams(lp, **self.options)
        return [(" ".join(b[0].split()), float(b[-1])) for b in beams]

    def decode_batch(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        lp = log_probs.detach().float().cpu().numpy()
        items = [lp[i, :n] for i, n in enumerate(lengths.tolist())]
        if self.num_processes > 1 and len(items) > 1:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(self.num_processes) as pool:
                texts = self.decoder.decode_batch(pool, items, **self.options)
        else:
            texts = [self.decoder.decode(x, **self.options) for x in items]
        return [" ".join(t.split()) for t in texts]
