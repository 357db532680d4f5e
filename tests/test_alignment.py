"""CTC forced alignment against brute force, and word timestamps on frames with known word boundaries."""

import itertools
import math

import pytest
import torch

from hw_asr.alignment import align_words, token_spans, viterbi_align
from hw_asr.text_encoder import CTCCharTextEncoder, SentencePieceTextEncoder


def collapse(path, blank=0):
    out, prev = [], None
    for p in path:
        if p != prev and p != blank:
            out.append(p)
        prev = p
    return out


def brute_force_best(log_probs, targets):
    """The best-scoring frame labelling that collapses to ``targets``, by trying every labelling."""
    frames, vocab = log_probs.shape
    best, best_path = -math.inf, None
    for path in itertools.product(range(vocab), repeat=frames):
        if collapse(path) == list(targets):
            score = float(sum(log_probs[t, p] for t, p in enumerate(path)))
            if score > best:
                best, best_path = score, path
    return best, best_path


@pytest.mark.parametrize(
    "frames,targets",
    [(5, [1, 2]), (5, [1, 1]), (6, [2, 1, 2]), (4, [1]), (3, [1, 1]), (6, [1, 2, 2, 1]), (5, [])],
)
def test_viterbi_equals_the_brute_force_best_path(frames, targets):
    torch.manual_seed(frames + len(targets))
    for _ in range(3):
        log_probs = torch.randn(frames, 3).mul(2).log_softmax(-1)
        best, path = brute_force_best(log_probs, targets)
        token_of_frame, score = viterbi_align(log_probs, targets)
        assert score == pytest.approx(best, abs=1e-4)
        # the frame labels of our alignment collapse to the targets and score what brute force found
        labels = [targets[u] if u >= 0 else 0 for u in token_of_frame.tolist()]
        assert collapse(labels) == list(targets)
        assert float(sum(log_probs[t, p] for t, p in enumerate(labels))) == pytest.approx(best, abs=1e-4)
        # repeated tokens are separate emissions: token u's frames never touch token u + 1's when equal
        spans = token_spans(token_of_frame, len(targets))
        for u in range(len(targets) - 1):
            assert spans[u][1] < spans[u + 1][0]
            if targets[u] == targets[u + 1]:
                assert spans[u + 1][0] - spans[u][1] >= 2  # a blank between them


def test_an_impossible_alignment_says_so():
    log_probs = torch.randn(3, 3).log_softmax(-1)
    assert viterbi_align(log_probs, [1, 1, 2]) == (None, -math.inf)  # needs 4 frames (a blank between 1 1)
    enc = CTCCharTextEncoder(alphabet="en")
    assert align_words(torch.randn(2, len(enc)).log_softmax(-1), "hello", enc, 0.04) is None


def frames_for(segments, encoder, peak=0.9):
    """Log-probs whose best path spells ``segments``: (token id or 0 for blank, number of frames) runs."""
    rows = []
    vocab = len(encoder)
    for token, count in segments:
        for _ in range(count):
            p = torch.full((vocab,), (1 - peak) / (vocab - 1))
            p[token] = peak
            rows.append(p)
    return torch.stack(rows).log()


def test_word_times_and_confidence_from_known_boundaries_char_vocabulary():
    enc = CTCCharTextEncoder(alphabet="en")
    c = enc.char2ind
    # "hi" at frames 3-6, silence 7-12, "you" at 13-18, trailing silence
    segments = [(0, 3), (c["h"], 2), (c["i"], 2), (0, 3), (c[" "], 1), (0, 2), (c["y"], 2), (c["o"], 2)]
    segments += [(c["u"], 2), (0, 4)]
    log_probs = frames_for(segments, enc)
    words = align_words(log_probs, "hi you", enc, frame_seconds=0.04)
    assert [w["word"] for w in words] == ["hi", "you"]
    assert words[0]["start"] == pytest.approx(3 * 0.04) and words[0]["end"] == pytest.approx(7 * 0.04)
    assert words[1]["start"] == pytest.approx(13 * 0.04) and words[1]["end"] == pytest.approx(19 * 0.04)
    assert all(w["confidence"] == pytest.approx(0.9, abs=1e-4) for w in words)
    # a token the frames barely support lowers its word's minimum and mean confidence
    log_probs[13:15] = frames_for([(c["y"], 2)], enc, peak=0.3)
    weak = align_words(log_probs, "hi you", enc, frame_seconds=0.04)[1]
    assert weak["min_confidence"] == pytest.approx(0.3, abs=1e-4)
    assert weak["confidence"] == pytest.approx((0.3 + 0.9 + 0.9) / 3, abs=1e-4)


def test_word_times_with_a_sentencepiece_vocabulary(tmp_path):
    texts = ["the cat sat on the mat", "a cat and a hat", "the hat sat"] * 30
    enc = SentencePieceTextEncoder(SentencePieceTextEncoder.train(texts, tmp_path / "spm", vocab_size=30))
    ids = enc.encode("the cat")
    pieces = [enc.vocab[i] for i in ids]
    assert pieces[0].startswith("\u2581")
    segments = [(0, 2)]
    for i in ids:
        if enc.vocab[i].startswith("\u2581") and i != ids[0]:
            segments.append((0, 5))  # silence before the second word
        segments += [(i, 2), (0, 1)]
    log_probs = frames_for(segments, enc)
    words = align_words(log_probs, "the cat", enc, frame_seconds=0.08)
    assert [w["word"] for w in words] == ["the", "cat"]
    assert words[0]["start"] == pytest.approx(2 * 0.08)
    assert words[1]["start"] > words[0]["end"]
