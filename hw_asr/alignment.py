"""CTC forced alignment (Viterbi) and word timestamps with confidences.

The best path of a token sequence through a CTC model's frame log-probabilities is found by dynamic
programming over the extended sequence ``blank, y1, blank, y2, ..., yU, blank`` (Graves et al. 2006):
a path stays on a state, moves to the next, or skips a blank between two different tokens. All states
of a frame are updated at once (torch, log space); the path is read back from the stored choices.

Words come from the aligned tokens: a character vocabulary ends a word at the space token, a
sentencepiece one starts a word at a piece beginning with "▁". A word's start is the first frame of its
first token and its end the frame after its last token's last frame, in seconds (frame shift x the
model's subsampling); its confidence is the mean over its tokens of each token's highest posterior
along its frames, and ``min_confidence`` the lowest of those.
"""

import math
from collections.abc import Mapping, Sequence

import torch

from hw_asr.text_encoder.base import BLANK_INDEX, BaseTextEncoder


def viterbi_align(
    log_probs: torch.Tensor, targets: Sequence[int], blank: int = BLANK_INDEX
) -> tuple[torch.Tensor | None, float]:
    """Best CTC alignment of ``targets`` (token ids, no blanks) to ``log_probs [T, V]``.

    Returns ``(token_of_frame [T], score)``: for each frame the index into ``targets`` of the token it
    emits, or -1 for a blank; ``score`` is the path's total log-probability. ``(None, -inf)`` when no
    alignment exists (more tokens, plus a blank between repeats, than frames).
    """
    log_probs = log_probs.float()
    frames = log_probs.shape[0]
    targets = torch.as_tensor(targets, dtype=torch.long, device=log_probs.device)
    n = len(targets)
    states = 2 * n + 1
    ext = torch.full((states,), blank, dtype=torch.long, device=log_probs.device)
    ext[1::2] = targets
    emit = log_probs[:, ext]  # [T, S]
    neg = torch.tensor(-math.inf, device=log_probs.device)
    skip_ok = torch.zeros(states, dtype=torch.bool, device=log_probs.device)
    if states > 2:
        skip_ok[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    alpha = torch.full((states,), -math.inf, device=log_probs.device)
    alpha[0] = emit[0, 0]
    if states > 1:
        alpha[1] = emit[0, 1]
    choice = torch.zeros((frames, states), dtype=torch.long, device=log_probs.device)
    for t in range(1, frames):
        prev1 = torch.cat([neg[None], alpha[:-1]])
        prev2 = torch.where(skip_ok, torch.cat([neg.expand(2), alpha[:-2]])[:states], neg)
        best, step = torch.stack([alpha, prev1, prev2]).max(0)
        choice[t] = step
        alpha = best + emit[t]
    ends = alpha[-2:] if states > 1 else alpha
    score, which = ends.max(0)
    if not torch.isfinite(score):
        return None, -math.inf
    state = states - len(ends) + int(which)
    choice = choice.cpu()
    path = [0] * frames
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= int(choice[t, state])
    token_of_frame = torch.tensor([(s - 1) // 2 if s % 2 else -1 for s in path], dtype=torch.long)
    return token_of_frame, float(score)


def token_spans(token_of_frame: Sequence[int], n_tokens: int) -> list[tuple[int | None, int | None]]:
    """``[(first_frame, last_frame), ...]`` of each target token along an alignment."""
    spans = [[None, None] for _ in range(n_tokens)]
    for t, u in enumerate(token_of_frame.tolist()):
        if u >= 0:
            if spans[u][0] is None:
                spans[u][0] = t
            spans[u][1] = t
    return [tuple(s) for s in spans]


def output_frame_seconds(
    model: torch.nn.Module, audio_length: torch.Tensor, output_length: torch.Tensor, sample_rate: int
) -> float:
    """Seconds between output frames: the frontend's hop times the model's time reduction (the ratio of
    frontend frames to output frames of the longest utterance, rounded)."""
    i = int(torch.argmax(audio_length))
    frontend_frames = int(model.frontend.output_lengths(audio_length[i : i + 1])[0])
    reduction = max(1, round(frontend_frames / max(int(output_length[i]), 1)))
    return model.frontend.hop_length * reduction / sample_rate


def align_batch(
    model: torch.nn.Module,
    audio_length: torch.Tensor,
    outputs: Mapping[str, torch.Tensor],
    texts: Sequence[str],
    encoder: BaseTextEncoder,
    sample_rate: int,
) -> list[list[dict] | None]:
    """The words of ``texts[i]`` aligned to utterance ``i`` of a batch's model ``outputs`` (``log_probs``,
    ``log_probs_length``), for the first ``len(texts)`` utterances: a list of :func:`align_words` results,
    None where the text is None or cannot be aligned. Frame times as :func:`output_frame_seconds` gives
    them for the whole batch (``audio_length``)."""
    lengths = outputs["log_probs_length"].cpu()
    frame_seconds = output_frame_seconds(model, audio_length.cpu(), lengths, sample_rate)
    log_probs = outputs["log_probs"][: len(texts)].float().cpu()
    return [
        None if text is None else align_words(log_probs[i, : int(lengths[i])], text, encoder, frame_seconds)
        for i, text in enumerate(texts)
    ]


def align_words(
    log_probs: torch.Tensor, text: str, encoder: BaseTextEncoder, frame_seconds: float
) -> list[dict] | None:
    """Words of ``text`` (e.g. the decoded hypothesis) with times and confidences from ``log_probs [T, V]``:
    ``[{"word", "start", "end", "confidence", "min_confidence"}, ...]``; ``[]`` for an empty text, None
    when ``text`` cannot be aligned to these frames."""
    ids = encoder.encode(encoder.normalize(text)) if text.strip() else []
    if not ids:
        return []
    token_of_frame, _ = viterbi_align(log_probs, ids)
    if token_of_frame is None:
        return None
    spans = token_spans(token_of_frame, len(ids))
    posteriors = log_probs.float().exp()
    confidences = [float(posteriors[a : b + 1, tok].max()) for tok, (a, b) in zip(ids, spans)]
    words, current = [], None
    for u, tok in enumerate(ids):
        piece = encoder.vocab[tok].replace("\u2581", " ")
        for char in piece:
            if char == " ":
                current = None
                continue
            if current is None:
                current = {"word": "", "first": spans[u][0], "tokens": []}
                words.append(current)
            current["word"] += char
            current["last"] = spans[u][1]
            if not current["tokens"] or current["tokens"][-1] != u:
                current["tokens"].append(u)
    return [
        {
            "word": w["word"],
            "start": round(w["first"] * frame_seconds, 3),
            "end": round((w["last"] + 1) * frame_seconds, 3),
            "confidence": round(sum(confidences[u] for u in w["tokens"]) / len(w["tokens"]), 4),
            "min_confidence": round(min(confidences[u] for u in w["tokens"]), 4),
        }
        for w in words
    ]
