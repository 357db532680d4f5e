"""CTC decoders beyond greedy: our prefix beam search, pyctcdecode and flashlight-text.

Every decoder is built with the text encoder, ``decoder(log_probs [T, V] numpy,
length) -> [(text, score), ...]`` returns an n-best list, and ``decode_batch``
decodes a batch. Configs name them under ``decoders``:

    "decoders": {"beam": {"type": "PrefixBeamSearchDecoder", "args": {"beam_size": 50}},
                 "beam_lm": {"type": "PyCTCDecodeDecoder", "args": {"lm_path": "data/lm/4gram.bin",
                                                                     "alpha": 0.5, "beta": 1.0}}}

and metrics refer to a decoder by that name (``{"type": "WERMetric", "args": {"decoder": "beam_lm"}}``).
"""

import math
import os
import sys
from functools import lru_cache

import numpy as np

from hw_asr.config import resolve
from hw_asr.text_encoder.base import BLANK_INDEX

__all__ = ["PrefixBeamSearchDecoder", "PyCTCDecodeDecoder", "FlashlightDecoder", "NBestRescoringDecoder", "KenLMWordLM"]

LN10 = math.log(10.0)


class KenLMWordLM:
    """Word n-gram LM (ARPA or KenLM binary) as natural-log probabilities of word sequences."""

    def __init__(self, path):
        import kenlm

        self.path = str(path)
        self.model = kenlm.Model(self.path)
        self.score = lru_cache(maxsize=200_000)(self._score)

    def _score(self, words, final=False):
        """ln P(words) from the sentence start; ``final`` adds the end of sentence."""
        return self.model.score(" ".join(words), bos=True, eos=final) * LN10


def ctc_label_logp(log_probs, label):
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


def _word_boundaries(encoder):
    """Which tokens complete the previous word: the space (chars) or pieces starting with ``▁`` (BPE)."""
    vocab = encoder.vocab
    if " " in vocab:
        return {vocab.index(" ")}, False
    return {i for i, piece in enumerate(vocab) if piece.startswith("\u2581")}, True


class HotPhrases:
    """Hot words or phrases and the bonus a prefix's words earn: ``weight`` for each hot phrase completed,
    and for one in progress ``weight`` times the share of its characters spelled so far.

    The bonus of a partial match is a share of the phrase, not a sum per character: a common start of a
    long name ("the" of "thermopylae") earns 3/11 of the weight, not 3 characters' worth, so that at a weight
    large enough to recall the names the beam does not fill with common words that begin like one."""

    def __init__(self, phrases, weight, normalize):
        self.phrases = [tuple(normalize(p).split()) for p in phrases if normalize(p).split()]
        self.weight = weight

    def __bool__(self):
        return bool(self.phrases) and self.weight != 0

    @staticmethod
    def _chars(words):
        return sum(len(w) for w in words)

    def completed(self, words):
        """Bonus for the phrases that end with the last completed word."""
        return self.weight * sum(1 for p in self.phrases if len(words) >= len(p) and words[-len(p) :] == p)

    def ongoing(self, words, partial):
        """Bonus for the furthest match in progress: a phrase whose first k words end the completed words
        and whose next word starts with ``partial`` (a whole phrase is counted by :meth:`completed`)."""
        best = 0.0
        for p in self.phrases:
            for k in range(len(p)):
                if (k or partial) and len(words) >= k and words[len(words) - k :] == p[:k] and p[k].startswith(partial):
                    best = max(best, (self._chars(p[:k]) + len(partial)) / self._chars(p))
        return self.weight * best

    def total(self, words):
        """Bonus of a finished hypothesis: every hot phrase it contains."""
        return self.weight * sum(
            1 for p in self.phrases for i in range(len(words) - len(p) + 1) if words[i : i + len(p)] == p
        )


class NBestDecoder:
    """What the n-best decoders share: ``decoder(log_probs [T, V], length) -> [(text, score), ...]``
    is theirs; a batch decodes to each utterance's best text."""

    def decode_batch(self, log_probs, lengths):
        lp = log_probs.detach().float().cpu().numpy()
        return [self(lp[i], int(n))[0][0] for i, n in enumerate(lengths.tolist())]


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
        text_encoder,
        beam_size=50,
        token_top_k=20,
        token_min_logp=-12.0,
        lm=None,
        alpha=0.5,
        beta=1.0,
        n_best=1,
        max_extensions=None,
        hotwords=None,
        hotword_weight=10.0,
    ):
        self.encoder = text_encoder
        self.beam_size, self.token_top_k, self.token_min_logp = beam_size, token_top_k, token_min_logp
        # extensions considered per frame before merging (None: 2 x beam_size; 0: all)
        self.max_extensions = 2 * beam_size if max_extensions is None else max_extensions
        self.lm = KenLMWordLM(lm) if isinstance(lm, str) else lm
        self.alpha, self.beta, self.n_best = alpha, beta, n_best
        self.boundaries, self.bpe = _word_boundaries(text_encoder)
        self.hot = HotPhrases(hotwords or [], hotword_weight, text_encoder.normalize)

    # ---- language model of a prefix ------------------------------------------------------
    def _extend_words(self, state, token):
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

    def _lm_score(self, state, final=False):
        if self.lm is None:
            return 0.0
        words, partial = state
        if final and partial:
            words = words + (partial,)
        lm = self.lm.score(words, final) if words or final else 0.0
        return self.alpha * lm + self.beta * len(words)

    # ---- search --------------------------------------------------------------------------
    def search(self, log_probs, length=None):
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

            def add(prefix, b, nb):
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

    def __call__(self, log_probs, length=None):
        """n-best ``[(text, score), ...]``."""
        merged = {}
        for prefix, _, score in self.search(log_probs, length):
            merged.setdefault(self.encoder.decode(list(prefix)), score)  # one text may have several spellings
        return list(merged.items())[: self.n_best] if self.n_best else list(merged.items())


def read_words(path):
    """Non-empty lines of a word list, stripped."""
    with open(path, encoding="utf-8") as f:
        return [w.strip() for w in f if w.strip()]


def lm_vocabulary(lm_path, required=True):
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
        text_encoder,
        beam_size=50,
        lm_path=None,
        unigrams_path=None,
        alpha=0.5,
        beta=1.0,
        num_processes=1,
        token_min_logp=-12.0,
        hotwords=None,
        hotword_weight=10.0,
    ):
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

    def __call__(self, log_probs, length=None):
        lp = np.asarray(log_probs, dtype=np.float32)[: length if length is not None else len(log_probs)]
        beams = self.decoder.decode_beams(lp, **self.options)
        return [(" ".join(b[0].split()), float(b[-1])) for b in beams]

    def decode_batch(self, log_probs, lengths):
        lp = log_probs.detach().float().cpu().numpy()
        items = [lp[i, :n] for i, n in enumerate(lengths.tolist())]
        if self.num_processes > 1 and len(items) > 1:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(self.num_processes) as pool:
                texts = self.decoder.decode_batch(pool, items, **self.options)
        else:
            texts = [self.decoder.decode(x, **self.options) for x in items]
        return [" ".join(t.split()) for t in texts]


class FlashlightDecoder(NBestDecoder):
    """flashlight-text's compiled beam search.

    With ``lm_path`` (a KenLM word model) it uses the lexicon decoder: words are
    spelled with the encoder's tokens (the LM's vocabulary, or ``lexicon_words``),
    so only known words come out. Without an LM it runs lexicon-free. Character
    vocabularies use the space as word separator; sentencepiece vocabularies ``▁``.
    """

    def __init__(
        self,
        text_encoder,
        beam_size=50,
        lm_path=None,
        lexicon_words=None,
        alpha=0.5,
        beta=1.0,
        token_top_k=20,
        beam_threshold=25.0,
        unk_score=float("-inf"),
        sil_score=0.0,
    ):
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

    def _spell(self, word):
        if self.separator == " ":
            ids = []
            for ch in word:
                if ch not in self.encoder.char2ind:
                    return None
                ids.append(self.encoder.char2ind[ch])
            return ids + [self.sil]
        ids = self.encoder.encode(word)
        return ids if ids else None

    def __call__(self, log_probs, length=None):
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


class CausalLMRescorer:
    """Scores texts with a neural causal LM (a Hugging Face model in a local folder,
    loaded without network): ``ln P(text)`` summed over its tokens after a start token."""

    def __init__(self, model_path, device="cpu", batch_size=16):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True).to(device).eval()
        self.device, self.batch_size = device, batch_size
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        if start is None:
            raise ValueError(f"{model_path}: the tokenizer has neither a bos nor an eos token to start from")
        self.start = start

    def log_probs(self, texts):
        import torch

        out = []
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i : i + self.batch_size]
            ids = [[self.start] + self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in chunk]
            width = max(len(x) for x in ids)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.start
            batch = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=self.device)
            with torch.no_grad():
                logits = self.model(input_ids=batch, attention_mask=mask).logits.float()
            lp = logits[:, :-1].log_softmax(-1).gather(-1, batch[:, 1:, None])[..., 0] * mask[:, 1:]
            out += lp.sum(-1).tolist()
        return out


class NBestRescoringDecoder(NBestDecoder):
    """Any decoder's n-best list re-ranked by ``score + weight * ln P_nn(text) + length_bonus * words``.

    ``decoder``: a decoder block (e.g. ``{"type": "FlashlightDecoder", "args": {...}}``);
    ``lm_path``: a local Hugging Face causal LM folder (needs ``transformers``).
    """

    def __init__(self, text_encoder, decoder, lm_path, weight=0.5, length_bonus=0.0, n_best=10, device="cpu"):
        args = dict(decoder.get("args") or {})
        if decoder.get("type") == "PrefixBeamSearchDecoder":
            args.setdefault("n_best", n_best)
        self.base = resolve(
            {"type": decoder["type"], "args": args}, sys.modules[__name__], "decoders.<rescoring>.decoder", text_encoder
        )
        self.rescorer = CausalLMRescorer(lm_path, device) if isinstance(lm_path, str) else lm_path
        self.weight, self.length_bonus, self.n_best = weight, length_bonus, n_best

    def rescore(self, nbest):
        nbest = nbest[: self.n_best]
        lm = self.rescorer.log_probs([text for text, _ in nbest])
        rescored = [
            (text, score + self.weight * lm_score + self.length_bonus * len(text.split()))
            for (text, score), lm_score in zip(nbest, lm)
        ]
        return sorted(rescored, key=lambda r: r[1], reverse=True)

    def __call__(self, log_probs, length=None):
        return self.rescore(self.base(log_probs, length))
