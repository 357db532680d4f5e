import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hw_asr.builder import build_decoders
from hw_asr.config import ConfigError
from hw_asr.text_encoder import CTCCharTextEncoder, SentencePieceTextEncoder
from hw_asr.text_encoder.decoders import FlashlightDecoder, PrefixBeamSearchDecoder, PyCTCDecodeDecoder
from tests.conftest import SAMPLE_MANIFEST

EN = CTCCharTextEncoder()
SMALL = CTCCharTextEncoder(" ab")  # blank, space, a, b


def collapse(path):
    out, prev = [], None
    for c in path:
        if c != prev and c != 0:
            out.append(c)
        prev = c
    return tuple(out)


def exhaustive(lp):
    """Probability of every label sequence by summing over all alignments."""
    probs = {}
    T, V = lp.shape
    for path in itertools.product(range(V), repeat=T):
        label = collapse(path)
        probs[label] = np.logaddexp(probs.get(label, -np.inf), sum(lp[t, c] for t, c in enumerate(path)))
    return probs


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 6), V=st.integers(2, 4), seed=st.integers(0, 10**6))
def test_prefix_beam_search_equals_exhaustive_enumeration(T, V, seed):
    rng = np.random.default_rng(seed)
    lp = torch.tensor(rng.normal(size=(T, V)) * 2).log_softmax(-1).numpy()
    enc = CTCCharTextEncoder(" abc"[: V - 1]) if V > 2 else CTCCharTextEncoder(" ")
    probs = exhaustive(lp)
    best_label, best_logp = max(probs.items(), key=lambda kv: kv[1])
    decoder = PrefixBeamSearchDecoder(enc, beam_size=10**4, token_top_k=V, token_min_logp=-np.inf, max_extensions=0)
    results = decoder.search(lp)
    label, logp, _ = results[0]
    assert logp == pytest.approx(best_logp, abs=1e-9)
    assert probs[label] == pytest.approx(best_logp, abs=1e-9)
    for lab, lp_ctc, _ in results:  # every prefix's probability is exact, not only the best
        assert lp_ctc == pytest.approx(probs[lab], abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 8), seed=st.integers(0, 10**6), n=st.integers(0, 4))
def test_exact_ctc_label_probability_matches_torch(T, seed, n):
    from hw_asr.text_encoder.decoders import ctc_label_logp

    rng = np.random.default_rng(seed)
    lp = torch.tensor(rng.normal(size=(T, 5))).log_softmax(-1).numpy()
    label = [int(c) for c in rng.integers(1, 5, size=n)]
    expected = ctc_logp(lp, label)
    if math.isfinite(expected):
        assert ctc_label_logp(lp, label) == pytest.approx(expected, abs=1e-6)
    else:
        assert ctc_label_logp(lp, label) == -np.inf


def ctc_logp(lp, label):
    if not label:
        return float(lp[:, 0].sum())
    loss = torch.nn.functional.ctc_loss(
        torch.tensor(lp)[:, None, :], torch.tensor([label]), [lp.shape[0]], [len(label)], reduction="sum"
    )
    return -loss.item()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_wide_beam_is_never_worse_than_greedy_in_model_score(seed):
    rng = np.random.default_rng(seed)
    lp = torch.tensor(rng.normal(size=(30, len(EN))) * 3).log_softmax(-1).numpy()
    greedy = collapse(lp.argmax(-1).tolist())
    wide = PrefixBeamSearchDecoder(EN, beam_size=256, token_top_k=len(EN), token_min_logp=-np.inf, max_extensions=0)
    label, logp, _ = wide.search(lp)[0]
    assert ctc_logp(lp, list(label)) >= ctc_logp(lp, list(greedy)) - 1e-6
    # a beam keeps a lower bound of each prefix's probability (pruned alignments are lost)
    for lab, lp_beam, _ in PrefixBeamSearchDecoder(EN, beam_size=8).search(lp):
        assert lp_beam <= ctc_logp(lp, list(lab)) + 1e-6


def peaky(encoder, text, frames_per_token=2, noise=0.0, seed=0):
    ids = encoder.encode(text)
    path = []
    for c in ids:
        path += [c] * (frames_per_token - 1) + [0]
    path += [0, 0]
    lp = np.full((len(path), len(encoder)), -9.0)
    lp[np.arange(len(path)), path] = 0.0
    lp += np.random.default_rng(seed).normal(size=lp.shape) * noise
    return torch.tensor(lp).log_softmax(-1).numpy()


ARPA = """\\data\\
ngram 1=8
ngram 2=3

\\1-grams:
-1.0\t<s>\t-0.3
-1.0\t</s>\t0
-2.0\t<unk>\t0
-0.6\tthe\t-0.3
-0.8\tcat\t-0.3
-4.0\tkat\t-0.3
-1.0\tsat\t-0.3
-1.2\tmat\t-0.3

\\2-grams:
-0.2\t<s> the
-0.3\tthe cat
-0.3\tcat sat

\\end\\
"""


@pytest.fixture(scope="module")
def arpa(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "tiny.arpa"
    path.write_text(ARPA)
    (path.parent / "tiny.unigrams.txt").write_text("the\ncat\nkat\nsat\nmat\n")
    return path


def ambiguous_cat(encoder):
    """Logits where 'k' is a little more likely than 'c': the acoustics say 'kat'."""
    lp = peaky(encoder, "the cat sat")
    t = 8  # the frame of 'c'
    assert lp[t].argmax() == encoder.char2ind["c"]
    lp[t, encoder.char2ind["c"]], lp[t, encoder.char2ind["k"]] = -1.0, -0.6
    return lp


def test_lm_weight_zero_equals_no_lm(arpa):
    lp = ambiguous_cat(EN)
    plain = PrefixBeamSearchDecoder(EN, beam_size=16).search(lp)
    zero = PrefixBeamSearchDecoder(EN, beam_size=16, lm=str(arpa), alpha=0.0, beta=0.0).search(lp)
    assert [r[:2] for r in plain] == [r[:2] for r in zero]
    assert PrefixBeamSearchDecoder(EN, beam_size=16)(lp)[0][0] == "the kat sat"


@pytest.mark.parametrize(
    "make",
    [
        lambda enc, lm: PrefixBeamSearchDecoder(enc, beam_size=16, lm=lm, alpha=1.0, beta=0.5),
        lambda enc, lm: FlashlightDecoder(enc, beam_size=16, lm_path=lm, alpha=1.0, beta=0.5),
    ],
)
def test_the_lm_fixes_a_word(arpa, make):
    decoder = make(EN, str(arpa))
    assert decoder(ambiguous_cat(EN))[0][0] == "the cat sat"


def test_pyctcdecode_with_lm_weight_zero_equals_no_lm(arpa):
    lp = ambiguous_cat(EN)
    plain = PyCTCDecodeDecoder(EN, beam_size=16)(lp)
    zero = PyCTCDecodeDecoder(EN, beam_size=16, lm_path=str(arpa), alpha=0.0, beta=0.0)(lp)
    assert plain[0][0] == zero[0][0] == "the kat sat"


def sample_texts():
    return [json.loads(line)["text"] for line in SAMPLE_MANIFEST.read_text().splitlines()]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    path = SentencePieceTextEncoder.train(
        sample_texts() * 5, tmp_path_factory.mktemp("spm") / "bpe", vocab_size=60, model_type="bpe"
    )
    return SentencePieceTextEncoder(path)


@pytest.mark.parametrize("vocab", ["char", "bpe"])
def test_backends_agree_on_peaky_logits(vocab, bpe):
    encoder = EN if vocab == "char" else bpe
    backends = [PrefixBeamSearchDecoder(encoder, beam_size=8), FlashlightDecoder(encoder, beam_size=8)]
    if vocab == "char":
        # pyctcdecode splits words after a bare "▁" piece, which this tiny BPE model uses
        backends.append(PyCTCDecodeDecoder(encoder, beam_size=8))
    for i, text in enumerate(sample_texts()[:6]):
        lp = peaky(encoder, text, noise=0.3, seed=i)
        outputs = {type(d).__name__: d(lp)[0][0] for d in backends}
        assert set(outputs.values()) == {text}, outputs


def test_decode_batch_and_registry(arpa):
    config = {
        "decoders": {
            "beam": {"type": "PrefixBeamSearchDecoder", "args": {"beam_size": 4}},
            "beam_lm": {"type": "PyCTCDecodeDecoder", "args": {"lm_path": str(arpa)}},
        }
    }
    decoders = build_decoders(config, EN)
    assert set(decoders) == {"argmax", "beam", "beam_lm"}
    lp = torch.stack([torch.tensor(peaky(EN, "the cat sat")), torch.tensor(peaky(EN, "the cat sat"))])
    assert decoders["beam"].decode_batch(lp, torch.tensor([lp.shape[1], 10])) == ["the cat sat", "the c"]
    with pytest.raises(ConfigError, match="not defined under 'decoders'"):
        build_decoders(config, EN, ["argmax", "fast"])


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory):
    """A randomly initialised 1-layer GPT-2 with a word-level tokenizer, saved locally (no download)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<s>", "<unk>", "the", "cat", "kat", "sat", "mat"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", unk_token="<unk>", pad_token="<pad>"
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=len(words), n_embd=16, n_layer=1, n_head=2, n_positions=16)
    )
    path = tmp_path_factory.mktemp("tiny_gpt2")
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return str(path)


def test_causal_lm_rescoring_reranks_the_nbest(tiny_causal_lm):
    from hw_asr.text_encoder.decoders import CausalLMRescorer, NBestRescoringDecoder

    rescorer = CausalLMRescorer(tiny_causal_lm)
    texts = ["the cat sat", "the kat sat", "the cat mat"]
    lm = rescorer.log_probs(texts)
    assert lm == pytest.approx(rescorer.log_probs(texts[::-1])[::-1], abs=1e-4), "padding does not change scores"
    assert all(v < 0 for v in lm)
    base = {"type": "PrefixBeamSearchDecoder", "args": {"beam_size": 16}}
    lp = ambiguous_cat(EN)
    plain = NBestRescoringDecoder(EN, base, rescorer, weight=0.0)(lp)
    assert plain[0][0] == "the kat sat"
    heavy = NBestRescoringDecoder(EN, base, rescorer, weight=1000.0)(lp)
    by_lm = sorted(heavy, key=lambda r: r[1], reverse=True)
    lm_scores = dict(zip([t for t, _ in heavy], rescorer.log_probs([t for t, _ in heavy])))
    assert [t for t, _ in by_lm] == sorted(lm_scores, key=lm_scores.get, reverse=True)
    decoder = build_decoders(
        {
            "decoders": {
                "rescored": {
                    "type": "NBestRescoringDecoder",
                    "args": {"decoder": base, "lm_path": tiny_causal_lm, "weight": 0.0},
                }
            }
        },
        EN,
    )["rescored"]
    assert decoder.decode_batch(torch.tensor(lp)[None], torch.tensor([lp.shape[0]])) == ["the kat sat"]


def test_hot_phrase_bonus_follows_the_prefix_and_is_taken_back_on_a_mismatch():
    from hw_asr.text_encoder.decoders import HotPhrases

    hot = HotPhrases(["New York", "Kaggle", "Thermopylae"], 2.0, CTCCharTextEncoder(alphabet="en").normalize)
    assert hot.ongoing((), "kag") == 2.0 * 3 / 6  # the share of the phrase spelled so far
    assert hot.ongoing((), "kat") == 0  # no longer a hot word's start: the bonus is gone
    assert hot.ongoing(("new",), "yo") == 2.0 * (3 + 2) / 7  # in the middle of a phrase
    assert hot.ongoing(("old",), "yo") == 0
    assert hot.ongoing((), "the") == 2.0 * 3 / 11  # a common word's start earns little of a long name's weight
    assert hot.completed(("we", "met", "in", "new", "york")) == 2.0  # the weight once per phrase
    assert hot.total(("kaggle", "and", "new", "york", "kaggle")) == 2.0 * 3
    assert not HotPhrases([], 2.0, str.lower) and not HotPhrases(["x"], 0.0, str.lower)


def test_hotwords_turn_a_close_call_into_the_hot_word():
    """Frames where "kat" is a little more likely than "kag": boosting "kag" flips the result, in our
    beam search and in pyctcdecode's, and the bonus leaves other words alone."""
    enc = CTCCharTextEncoder(alphabet="en")
    c = enc.char2ind
    rows = []
    for chars in (["k"], ["a"], ["t", "g"]):
        p = np.full(len(enc), 1e-4)
        if len(chars) == 1:
            p[c[chars[0]]] = 0.9
        else:
            p[c[chars[0]]], p[c[chars[1]]] = 0.5, 0.4
        rows += [p / p.sum(), np.eye(len(enc))[0] * 0.9 + 0.1 / len(enc)]
    lp = torch.tensor(np.log(np.stack(rows)), dtype=torch.float32)[None]
    lengths = torch.tensor([lp.shape[1]])
    plain = PrefixBeamSearchDecoder(enc, beam_size=8)
    boosted = PrefixBeamSearchDecoder(enc, beam_size=8, hotwords=["kag"], hotword_weight=1.0)
    assert plain.decode_batch(lp, lengths) == ["kat"]
    assert boosted.decode_batch(lp, lengths) == ["kag"]
    assert PrefixBeamSearchDecoder(enc, beam_size=8, hotwords=["dog"]).decode_batch(lp, lengths) == ["kat"]
    assert PyCTCDecodeDecoder(enc, beam_size=8).decode_batch(lp, lengths) == ["kat"]
    assert PyCTCDecodeDecoder(enc, beam_size=8, hotwords=["kag"], hotword_weight=10.0).decode_batch(lp, lengths) == [
        "kag"
    ]


def test_extensions_are_pre_pruned_with_the_parents_hot_word_bonus():
    """Two frames where "cd" is acoustically best and "ab" (the hot word) worst of the four paths. With room
    for two extensions per frame, ranking them by acoustics alone keeps c+d and a+d and loses "ab"; ranked
    as the beam is, the hot partial "a" carries its bonus into the ranking and "ab" survives and wins."""
    enc = CTCCharTextEncoder(alphabet="en")
    c = enc.char2ind
    rows = []
    for probs in ({"a": 0.4, "c": 0.55}, {"b": 0.3, "d": 0.65}):
        p = np.full(len(enc), 1e-6)
        for ch, v in probs.items():
            p[c[ch]] = v
        p[0] = 0.05
        rows.append(p / p.sum())
    lp = torch.tensor(np.log(np.stack(rows)), dtype=torch.float32)[None]
    lengths = torch.tensor([2])
    narrow = dict(beam_size=2, max_extensions=2)
    assert PrefixBeamSearchDecoder(enc, **narrow).decode_batch(lp, lengths) == ["cd"]
    boosted = PrefixBeamSearchDecoder(enc, hotwords=["ab"], hotword_weight=4.0, **narrow)
    assert boosted.decode_batch(lp, lengths) == ["ab"]
