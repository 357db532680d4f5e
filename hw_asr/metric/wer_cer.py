"""Word and character error rates, aggregated over a whole split (jiwer counts the edits)."""

from collections.abc import Sequence

import jiwer


def _word_edits(ref: str | list[str], hyp: str | list[str]) -> tuple[int, int]:
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, out.substitutions + out.deletions + out.hits


def _char_edits(ref: str | list[str], hyp: str | list[str]) -> tuple[int, int]:
    out = jiwer.process_characters(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, out.substitutions + out.deletions + out.hits


def calc_wer(ref: str, hyp: str) -> float:
    """Word error rate of one utterance; an empty reference scores 0 for an empty hypothesis, else 1."""
    if not ref.split():
        return float(bool(hyp.split()))
    errors, n = _word_edits(ref, hyp)
    return errors / n


def calc_cer(ref: str, hyp: str) -> float:
    if not ref:
        return float(bool(hyp))
    errors, n = _char_edits(ref, hyp)
    return errors / n


class _CorpusErrorRate:
    """Sum of edits over the sum of reference lengths, across every ``update`` since ``reset``.

    ``decoder`` names whose hypotheses it scores (``argmax`` greedy; others
    come with the decoding backends). Pairs with an empty reference are not scored.
    """

    unit = ""

    def __init__(self, name: str | None = None, decoder: str = "argmax") -> None:
        self.decoder = decoder
        self.name = name or f"{self.unit} ({decoder})"
        self.reset()

    def reset(self) -> None:
        self.errors, self.total = 0, 0

    def _edits(self, ref: list[str], hyp: list[str]) -> tuple[int, int]:
        raise NotImplementedError

    def update(self, refs: Sequence[str], hyps: Sequence[str | None]) -> None:
        pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip() and h is not None]
        if pairs:
            errors, total = self._edits([r for r, _ in pairs], [h for _, h in pairs])
            self.errors += errors
            self.total += total

    def sums(self) -> list[int]:
        """``[errors, reference length]`` since ``reset``: what to add up across processes."""
        return [self.errors, self.total]

    def load_sums(self, sums: Sequence[float]) -> None:
        """Take summed ``[errors, reference length]`` (e.g. over every rank) as the metric's state."""
        self.errors, self.total = sums

    def result(self) -> float:
        return self.errors / self.total if self.total else float("nan")


class WERMetric(_CorpusErrorRate):
    unit = "WER"

    def _edits(self, refs: list[str], hyps: list[str]) -> tuple[int, int]:
        return _word_edits(refs, hyps)


class CERMetric(_CorpusErrorRate):
    unit = "CER"

    def _edits(self, refs: list[str], hyps: list[str]) -> tuple[int, int]:
        return _char_edits(refs, hyps)


class ArgmaxWERMetric(WERMetric):
    """WER of greedy (argmax) decoding, as the course template names it."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name, decoder="argmax")


class ArgmaxCERMetric(CERMetric):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name, decoder="argmax")
