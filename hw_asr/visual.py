"""Pictures of what a model hears and says: a log-mel spectrogram with the aligned words on it.

The training media (one validation utterance per evaluation) and ``hw_asr.tools.report`` (the worst
utterances of a ``test.py`` result) draw the same picture. Matplotlib renders off-screen (Agg).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from hw_asr.model.frontend import LogMelFrontend

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def log_mel(audio: torch.Tensor | np.ndarray, sample_rate: int, n_mels: int = 80) -> np.ndarray:
    """``[n_mels, frames]`` log-mel of a mono wave (10 ms hop), for display."""
    wave = torch.as_tensor(audio, dtype=torch.float32).reshape(1, -1)
    frontend = LogMelFrontend(sample_rate=sample_rate, n_mels=n_mels, normalize=None)
    with torch.no_grad():
        feats, _ = frontend(wave, torch.tensor([wave.shape[1]]))
    return feats[0].numpy()


def alignment_figure(
    audio: torch.Tensor | np.ndarray,
    sample_rate: int,
    words: list[dict] | None = None,
    title: str | None = None,
    reference: str | None = None,
) -> Figure:
    """A matplotlib figure: the spectrogram over time in seconds, and for each aligned word (``{"word",
    "start", "end", "confidence"}``, as :func:`hw_asr.alignment.align_words` gives) a span coloured by
    its confidence (red low, green high) with the word written on it. ``reference``: the ground truth,
    printed under the picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = log_mel(audio, sample_rate)
    seconds = len(np.asarray(audio).reshape(-1)) / sample_rate
    fig, ax = plt.subplots(figsize=(max(6.0, min(24.0, 1.2 * seconds)), 3.2))
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, spec.shape[0]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    cmap = plt.get_cmap("RdYlGn")
    for i, w in enumerate(words or []):
        conf = w.get("confidence", 1.0)
        ax.axvspan(w["start"], w["end"], ymin=0.0, ymax=0.12, color=cmap(conf), alpha=0.9)
        ax.axvline(w["start"], color="white", lw=0.5, alpha=0.6)
        y = spec.shape[0] * (0.2 if i % 2 == 0 else 0.32)  # alternate rows so short words do not overlap
        ax.text(
            (w["start"] + w["end"]) / 2,
            y,
            w["word"],
            color="white",
            ha="center",
            va="bottom",
            fontsize=9,
            bbox={"facecolor": "black", "alpha": 0.45, "pad": 1, "linewidth": 0},
        )
    if title:
        ax.set_title(title, fontsize=9)
    if reference:
        fig.text(0.01, 0.01, f"reference: {reference}", fontsize=8, wrap=True)
        fig.subplots_adjust(bottom=0.28)
    else:
        fig.tight_layout()
    return fig
