"""What the beam decoders share: the n-best interface, exact CTC label scores, word boundaries of a vocabulary."""

from collections.abc import Sequence

import numpy as np
import torch

from hw_asr.text_encoder.base import BLANK_INDEX, BaseTextEncoder


def ctc_label_logp(log_probs: np.ndarray, label: Sequence[int]) -> float:
    """Exact ln P(label | log_probs) by the CTC forward algorithm (numpy, blank = 0)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    ext = [BLANK_INDEX]
    for c in label:
        ext += [c, BLANK_INDEX]
    ext = np.array(ext)
    alpha = np.full(len(ext), -np.inf)
    alpha[0] = lp[0, ext[0]]
    if len(ext) > 1:
        alpha[1] = lp[0, ext[1]]
    skip = np.zeros(len(ext), dtype=bool)
    skip[2:] = (ext[2:] != BLANK_INDEX) & (ext[2:] != ext[:-2])
    for t in range(1, lp.shape[0]):
        prev = alpha.copy()
        step = prev.copy()
        step[1:] = np.logaddexp(step[1:], prev[:-1])
        step[2:] = np.where(skip[2:], np.logaddexp(step[2:], prev[:-2]), step[2:])
        alpha = step + lp[t, ext]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if len(ext) > 1 else alpha[-1])


def _word_boundaries(encoder: BaseTextEncoder) -> tuple[set[int], bool]:
    """Which tokens complete the previous word: the space (chars) or pieces starting with ``▁`` (BPE)."""
    vocab = encoder.vocab
    if " " in vocab:
        return {vocab.index(" ")}, False
    return {i for i, piece in enumerate(vocab) if piece.startswith("\u2581")}, True


class NBestDecoder:
    """What the n-best decoders share: ``decoder(log_probs [T, V], length) -> [(text, score), ...]``
    is theirs; a batch decodes to each utterance's best text."""

    def decode_batch(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        lp = log_probs.detach().float().cpu().numpy()
        return [self(lp[i], int(n))[0][0] for i, n in enumerate(lengths.tolist())]
