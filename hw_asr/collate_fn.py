"""Batching items into the batch contract of docs/architecture.md."""

import math
from collections.abc import Sequence
from typing import Any

import torch

from hw_asr.batch_sampler import grid_length


def collate_fn(items: Sequence[dict], length_grid: float | None = None, sample_rate: int = 16000) -> dict[str, Any]:
    """``audio [B, T_max]``, ``audio_length [B]``, ``text_encoded [B, L_max]``,
    ``text_encoded_length [B]``, ``text``, ``audio_path`` (and ``duration``).
    Padding is zeros; lengths say what is real. Items that failed to load (``load_error``) are
    left out and listed as ``skipped: [(path, reason), ...]``; a batch of only such items has B = 0.
    With ``length_grid`` (the sampler's), the audio is padded to the next length of that grid."""
    if not items:
        raise ValueError("collate_fn got an empty batch")
    skipped = [it["load_error"] for it in items if "load_error" in it]  # files that failed to decode
    items = [it for it in items if "load_error" not in it]
    if not items:
        return {
            "audio": torch.zeros(0, 0),
            "audio_length": torch.zeros(0, dtype=torch.long),
            "text": [],
            "audio_path": [],
            "duration": [],
            "load_failures": [],
            "skipped": skipped,
            "num_samples": 0,
        }
    lengths = [it["audio"].shape[-1] for it in items]
    audio_length = torch.tensor(lengths, dtype=torch.long)
    width = int(audio_length.max())
    if length_grid:
        width = max(width, math.ceil(grid_length(width / sample_rate, length_grid) * sample_rate - 1e-6))
    audio = torch.zeros(len(items), width, dtype=torch.float32)
    for i, it in enumerate(items):
        audio[i, : audio_length[i]] = it["audio"]
    batch = {
        "audio": audio,
        "audio_length": audio_length,
        "num_samples": sum(lengths),  # a host number: read without a device sync
        "text": [it["text"] for it in items],
        "audio_path": [it["audio_path"] for it in items],
        "duration": [it["duration"] for it in items],
        "load_failures": [path for it in items for path in it.get("load_failures", ())],
        "skipped": skipped,
    }
    if all("text_encoded" in it for it in items):
        text_length = torch.tensor([len(it["text_encoded"]) for it in items], dtype=torch.long)
        text = torch.zeros(len(items), max(int(text_length.max()), 1), dtype=torch.long)
        for i, it in enumerate(items):
            text[i, : text_length[i]] = it["text_encoded"]
        batch["text_encoded"] = text
        batch["text_encoded_length"] = text_length
    return batch
