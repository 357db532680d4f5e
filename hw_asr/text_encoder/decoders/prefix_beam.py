"""Our CTC prefix beam search, with an optional KenLM word LM and hot phrases."""

from collections.abc import Sequence

import numpy as np

from hw_asr.text_encoder.base import BLANK_INDEX, BaseTextEncoder
from hw_asr.text_encoder.decoders.common import NBestDecoder, _word_boundaries, ctc_label_logp
from hw_asr.text_encoder.decoders.hot_phrases import HotPhrases
from hw_asr.text_encoder.decoders.language_model import KenLMWordLM


class PrefixBeamSearchDecoder(NBestDecoder):
    """CTC prefix beam search (Hannun et al. 2014, "First-pass large vocabulary continuous
    speech recognition using bi-directional recurrent DNNs") in log space.

    Each prefix keeps the probability of its alignments ending in blank and in its
    last token; equal prefixes reached in different ways are merged. Per frame only
    tokens among the ``token_top_k`` most likely and above ``token_min_logp`` are
    tried, and only the ``max_extensions`` best extensions (default 2 x beam), ranked
    as the beam is (with the parent prefix's LM terms and hot-word bonus), are
    merged into the next beam. The greedy labeling is always among the final
    candidates (scored exactly), so the result is never less likely than greedy's.
    With ``lm`` (a KenLM word model path or any object with
    ``score(words, final) -> ln p``), prefixes are ranked by
    ``ln p_ctc + alpha * ln p_lm(words) + beta * len(words)``, the LM scoring each
    word when the next word starts (and the last at the end).

    ``hotwords`` (words or phrases) with ``hotword_weight`` (added to the log score, the scale of
    pyctcdecode's): a prefix earns the weight for each hot phrase it completes and, while it follows
    one, the weight times the share of the phrase's characters spelled so far (:class:`HotPhrases`);
    the bonus in progress is taken back when the partial word stops matching, as icefall's context
    graph does.
    """

    def __init__(
        self,
        text_encoder: BaseTextEncoder,
        beam_size: int = 50,
        token_top_k: int = 20,
        token_min_logp: float = -12.0,
        lm: str | KenLMWordLM | None = None,
        alpha: float = 0.5,
        beta: float = 1.0,
        n_best: int = 1,
        max_extensions: int | None = None,
        hotwords: Sequence[str] | None = None,
        hotword_weight: float = 10.0,
    ) -> None:
        self.encoder = text_encoder
        self.beam_size, self.token_top_k, self.token_min_logp = beam_size, token_top_k, token_min_logp
        # extensions considered per frame before merging (None: 2 x beam_size; 0: all)
        self.max_extensions = 2 * beam_size if max_extensions is None else max_extensions
        self.lm = KenLMWordLM(lm) if isinstance(lm, str) else lm
        self.alpha, self.beta, self.n_best = alpha, beta, n_best
        self.boundaries, self.bpe = _word_boundaries(text_encoder)
        self.hot = HotPhrases(hotwords or [], hotword_weight, text_encoder.normalize)

    # ---- language model of a prefix ------------------------------------------------------
    def _extend_words(self, state: tuple[tuple[str, ...], str], token: int) -> tuple[tuple[str, ...], str]:
        """(completed words, partial word) after appending ``token``: O(1) per extension."""
        words, partial = state
        piece = self.encoder.vocab[token]
        if token in self.boundaries:
            if partial:
                words = words + (partial,)
            partial = piece[1:] if self.bpe else ""
        else:
            partial = partial + piece
        return words, partial

    def _lm_score(self, state: tuple[tuple[str, ...], str], final: bool = False) -> float:
        if self.lm is None:
            return 0.0
        words, partial = state
        if final and partial:
            words = words + (partial,)
        lm = self.lm.score(words, final) if words or final else 0.0
        return self.alpha * lm + self.beta * len(words)

    # ---- search --------------------------------------------------------------------------
    def search(self, log_probs: np.ndarray, length: int | None = None) -> list[tuple[tuple[int, ...], float, float]]:
        """Label sequences of the final beam, best first: ``[(token ids, ln p_ctc, score), ...]``
        where score adds the LM terms."""
        lp = np.asarray(log_probs, dtype=np.float64)[: length if length is not None else len(log_probs)]
        neg_inf = -np.inf
        use_lm = self.lm is not None and (self.alpha != 0 or self.beta != 0)
        hot = self.hot if self.hot else None
        # beams: prefix -> [ln p ending in blank, ln p ending in last token]
        beams = {(): [0.0, neg_inf]}
        words = {(): ((), "")}  # prefix -> (completed words, partial word)
        lm_score = {(): 0.0}  # LM terms plus the hot-word bonus of the prefix
        done_bonus = {(): 0.0}  # hot phrases completed along the prefix
        for t in range(lp.shape[0]):
            frame = lp[t]
            order = np.argsort(frame)[::-1][: self.token_top_k]
            tokens = [int(c) for c in order if c != BLANK_INDEX and frame[c] >= self.token_min_logp]
            prefixes = list(beams)
            pb = np.array([beams[p][0] for p in prefixes])
            pnb = np.array([beams[p][1] for p in prefixes])
            total = np.logaddexp(pb, pnb)
            extra = np.array([lm_score[p] for p in prefixes]) if use_lm or hot is not None else None
            new = {}

            def add(prefix: tuple[int, ...], b: float, nb: float) -> None:
                if prefix in new:
                    old = new[prefix]
                    old[0], old[1] = np.logaddexp(old[0], b), np.logaddexp(old[1], nb)
                else:
                    new[prefix] = [b, nb]

            # stay: emit blank, or repeat the last token (collapsed)
            stay_b = total + frame[BLANK_INDEX]
            for k, prefix in enumerate(prefixes):
                stay_nb = pnb[k] + frame[prefix[-1]] if prefix else neg_inf
                add(prefix, stay_b[k], stay_nb)
            if tokens:
                tok = np.array(tokens)
                last = np.array([p[-1] if p else -1 for p in prefixes])
                # extending with the token just emitted needs a blank in between
                ext = np.where(last[:, None] == tok[None, :], pb[:, None], total[:, None]) + frame[tok][None, :]
                flat = ext.ravel()
                keep = min(flat.size, self.max_extensions or flat.size)
                if keep < flat.size:
                    # ranked as the beam is: with the parent's LM terms and hot-word bonus, so that a prefix
                    # the LM or a hot word carries is not cut for its acoustic score alone
                    rank = flat if extra is None else (ext + extra[:, None]).ravel()
                    best = np.argpartition(-rank, keep - 1)[:keep]
                else:
                    best = np.arange(flat.size)
                for idx in best:
                    k, j = divmod(int(idx), len(tokens))
                    if flat[idx] == neg_inf:
                        continue
                    prefix = prefixes[k] + (tokens[j],)
                    add(prefix, neg_inf, flat[idx])
                    if prefix not in words:
                        parent = prefixes[k]
                        words[prefix] = self._extend_words(words[parent], tokens[j])
                        lm_score[prefix] = self._lm_score(words[prefix]) if use_lm else 0.0
                        if hot is not None:
                            done = done_bonus[parent]
                            if len(words[prefix][0]) > len(words[parent][0]):  # a word was completed
                                done += hot.completed(words[prefix][0])
                            done_bonus[prefix] = done
                            lm_score[prefix] += done + hot.ongoing(*words[prefix])
            ranked = sorted(new.items(), key=lambda kv: np.logaddexp(*kv[1]) + lm_score[kv[0]], reverse=True)
            beams = dict(ranked[: self.beam_size])
            if len(words) > 50 * self.beam_size:  # forget prefixes that fell out of the beam
                words = {p: words[p] for p in beams}
                lm_score = {p: lm_score[p] for p in beams}
                done_bonus = {p: done_bonus[p] for p in beams if p in done_bonus}
        # the greedy labeling is always a candidate, scored exactly: the search never
        # returns something the model finds less likely than greedy decoding would
        greedy = tuple(self.encoder.ctc_collapse(lp.argmax(-1).tolist()))
        beams[greedy] = [ctc_label_logp(lp, greedy), -np.inf]  # exact, >= the beam's lower bound
        if greedy not in words:
            state = ((), "")
            for token in greedy:
                state = self._extend_words(state, token)
            words[greedy] = state
        results = []
        for prefix, (b, nb) in beams.items():
            ctc = float(np.logaddexp(b, nb))
            score = ctc + (self._lm_score(words[prefix], final=True) if use_lm else 0.0)
            if hot is not None:
                completed, partial = words[prefix]
                score += hot.total(completed + ((partial,) if partial else ()))
            results.append((prefix, ctc, score))
        return sorted(results, key=lambda r: r[2], reverse=True)

    def __call__(self, log_probs: np.ndarray, length: int | None = None) -> list[tuple[str, float]]:
        """n-best ``[(text, score), ...]``."""
        merged = {}
        for prefix, _, score in self.search(log_probs, length):
            merged.setdefault(self.encoder.decode(list(prefix)), score)  # one text may have several spellings
        return list(merged.items())[: self.n_best] if self.n_best else list(merged.items())
