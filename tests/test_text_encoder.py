import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw_asr.text_encoder import BLANK_INDEX, CTCCharTextEncoder, SentencePieceTextEncoder, text_encoder_from_state
from hw_asr.text_encoder.ctc_char_text_encoder import ALPHABETS
from tests.conftest import SAMPLE_MANIFEST

EN = CTCCharTextEncoder()
RU = CTCCharTextEncoder("ru")


def test_vocab_layout():
    assert EN.vocab[BLANK_INDEX] == "^" and len(EN) == 29
    assert len(RU) == 34  # 33 symbols incl. space + blank


@given(st.text(alphabet=ALPHABETS["en"], max_size=60))
def test_char_round_trip_after_normalisation(text):
    norm = EN.normalize(text)
    assert EN.decode(EN.encode(norm)) == norm
    assert EN.normalize(norm) == norm, "normalisation is idempotent"


@given(st.text(max_size=40))
def test_normalise_never_crashes_and_reports_unknowns(text):
    norm = EN.normalize(text)
    unknown = EN.unknown_chars(norm)
    if unknown:
        with pytest.raises(ValueError, match="not in the alphabet"):
            EN.encode(norm)
    else:
        assert EN.decode(EN.encode(norm)) == norm


def test_normalisation_examples():
    assert EN.normalize("  Hello,   WORLD!  It\u2019s  well-known.") == "hello world it's well known"
    assert RU.normalize("Ёлка, Зелёная!") == "елка зеленая"


@given(st.lists(st.integers(0, 5), max_size=30))
def test_ctc_collapse_matches_definition(ids):
    out = EN.ctc_collapse(ids)
    assert BLANK_INDEX not in out
    expected = [x for i, x in enumerate(ids) if x != BLANK_INDEX and (i == 0 or ids[i - 1] != x)]
    assert out == expected


def test_ctc_greedy_on_logits():
    import torch

    h, e, el, o = (EN.char2ind[c] for c in "helo")
    ids = [0, h, h, 0, e, el, el, 0, el, o, 0]  # the blank between the l's keeps both
    log_probs = torch.full((1, len(ids), len(EN)), -10.0)
    log_probs[0, torch.arange(len(ids)), torch.tensor(ids)] = 0.0
    assert EN.ctc_greedy(log_probs, torch.tensor([len(ids)])) == ["hello"]
    assert EN.ctc_greedy(log_probs, torch.tensor([5])) == ["he"]


def test_alphabet_must_hold_space():
    with pytest.raises(ValueError, match="space"):
        CTCCharTextEncoder("abc")


def test_state_round_trip():
    for enc in (EN, RU, CTCCharTextEncoder(" abc")):
        again = text_encoder_from_state(enc.state())
        assert again.vocab == enc.vocab


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    import json

    texts = [json.loads(line)["text"] for line in SAMPLE_MANIFEST.read_text().splitlines()]
    prefix = tmp_path_factory.mktemp("spm") / "bpe"
    return SentencePieceTextEncoder.train(texts * 5, prefix, vocab_size=60, model_type="bpe"), texts


@settings(deadline=None, max_examples=50)
@given(st.text(alphabet="abcdefghilmnorstuwy ", max_size=40))
def test_sentencepiece_round_trip(spm_model, text):
    enc = SentencePieceTextEncoder(spm_model[0])
    norm = enc.normalize(text)
    ids = enc.encode(norm)
    assert BLANK_INDEX not in ids
    assert enc.decode(ids) == norm


def test_sentencepiece_state_and_reload(spm_model):
    path, texts = spm_model
    enc = SentencePieceTextEncoder(path)
    again = text_encoder_from_state(enc.state())
    assert again.vocab == enc.vocab and again.encode(texts[0]) == enc.encode(texts[0])
    assert len(enc) == enc.sp.get_piece_size() + 1
    assert enc.unknown_chars("hello") == set() and enc.unknown_chars("hé") == {"é"}


def test_sentencepiece_missing_model_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_sentencepiece"):
        SentencePieceTextEncoder(tmp_path / "none.model")
