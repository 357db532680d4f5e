"""The CTC head's bias started at the output distribution of CTC's blank plateau.

Early in training every CTC model passes through the same state: an output that does not depend on the
audio, blank on most frames and the other tokens at about their frequency in the transcripts (the "blank
plateau"; loss near the unigram entropy). A model started with a bias of zero first has to get there, and
Adam moves a bias by about the learning rate per step, so a deep stack whose features shift under every
step spends its first hundred or more steps only arriving (BENCHMARKS.md, "Leaving the blank plateau").
Starting the bias at that distribution's logarithm puts a new model on the plateau at step 0; the weights
are unchanged. The idea is the usual one of initialising an output layer's bias at the label prior
(e.g. the focal-loss paper's prior initialisation, T.-Y. Lin et al., ICCV 2017, arXiv:1708.02002).

``ctc_output_prior(model, dataset, encoder)``: blank takes the share of output frames that the transcripts
leave free (1 - tokens / frames over the training split, at least ``min_blank``), the other tokens share the
rest by their counts (plus one, so that no token starts at probability 0).
"""

import logging

import torch
from torch import nn

from hw_asr.datasets.base_dataset import dataset_parts
from hw_asr.text_encoder.base import BaseTextEncoder

logger = logging.getLogger(__name__)


def output_frames_per_second(model: nn.Module, sample_rate: int, seconds: float = 10.0) -> float:
    """Output frames per second of audio, from one forward pass of ``seconds`` of silence in eval mode
    (the model's training mode is restored; nothing is updated)."""
    was_training = model.training
    param = next(model.parameters())
    samples = int(seconds * sample_rate)
    try:
        model.eval()
        with torch.no_grad():
            audio = torch.zeros(1, samples, device=param.device)
            out = model(audio=audio, audio_length=torch.tensor([samples], device=param.device))
    finally:
        model.train(was_training)
    return float(out["log_probs_length"][0]) / seconds


def transcript_counts(dataset: torch.utils.data.Dataset, encoder: BaseTextEncoder) -> tuple[torch.Tensor, float]:
    """``(counts, seconds)``: how often each of the encoder's tokens occurs in the transcripts of ``dataset``
    (float64 ``[len(encoder)]``, blank at 0) and the seconds of audio they cover. ``dataset``: a dataset
    with an index or with ``transcripts()`` (a streamed one, which lists them without reading audio), or
    a ConcatDataset of them."""
    parts = dataset_parts(dataset)
    missing = [type(p).__name__ for p in parts if not hasattr(p, "index") and not hasattr(p, "transcripts")]
    if missing:
        raise ValueError(
            f"trainer.head_prior needs the training split's transcripts before training; {', '.join(missing)} "
            "streams its items and lists none. Set trainer.head_prior=false for this data."
        )
    counts = torch.zeros(len(encoder), dtype=torch.float64)
    seconds = 0.0
    for part in parts:
        for row in part.index if hasattr(part, "index") else part.transcripts():
            ids = encoder.encode(encoder.normalize(row["text"]))
            counts += torch.bincount(torch.as_tensor(ids, dtype=torch.long).flatten(), minlength=len(encoder))
            seconds += float(row["duration"])
    return counts, seconds


def ctc_output_prior(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    encoder: BaseTextEncoder,
    sample_rate: int,
    min_blank: float = 0.1,
) -> torch.Tensor:
    """Probabilities ``[n_tokens]`` (blank at index 0) of the plateau's output, estimated from the
    transcripts and durations of ``dataset`` (as :func:`transcript_counts` reads them)."""
    counts, seconds = transcript_counts(dataset, encoder)
    if seconds <= 0:
        raise ValueError("trainer.head_prior: the training split has no audio to estimate the prior from")
    frames = seconds * output_frames_per_second(model, sample_rate)
    tokens = float(counts[1:].sum())
    blank = min(0.999, max(min_blank, 1.0 - tokens / frames))
    smoothed = counts[1:] + 1.0  # no token starts at probability 0
    prior = torch.cat([torch.tensor([blank], dtype=torch.float64), smoothed / smoothed.sum() * (1.0 - blank)])
    logger.info(
        "head prior: blank %.3f (%.0f tokens over %.0f output frames); most frequent token %.3f",
        blank,
        tokens,
        frames,
        float(prior[1:].max()),
    )
    return prior.float()


def set_output_prior(model: nn.Module, prior: torch.Tensor) -> None:
    """Set ``model.head``'s bias to ``log(prior)`` (a softmax of the bias alone gives ``prior``)."""
    head = getattr(model, "head", None)
    bias = getattr(head, "bias", None)
    if bias is None:
        raise ValueError(
            f"trainer.head_prior: {type(model).__name__}'s output layer has no bias to start at the prior; "
            "set trainer.head_prior=false"
        )
    if bias.shape != prior.shape:
        raise ValueError(f"trainer.head_prior: the head has {bias.numel()} outputs, the prior {prior.numel()}")
    with torch.no_grad():
        bias.copy_(prior.clamp_min(1e-8).log().to(bias.dtype))
    logger.info("head bias set to the log prior (entropy %.2f nats)", -float((prior * prior.log()).sum()))
